package sdk

import "time"

// Session timeouts (docs/sdk.md).
const (
	SessionIdleTimeout       = 30 * time.Minute
	SessionBackgroundTimeout = 30 * time.Second
)

// sessions decides the session id of each event from the times it is given;
// it has no clock of its own. A session ends after SessionIdleTimeout without
// an event in the foreground, or SessionBackgroundTimeout in the background.
type sessions struct {
	id         string
	last       time.Time // last activity: an event, Background or Foreground
	background bool
}

// at returns the session id for an event at now, starting a new session
// when the previous one has expired.
func (s *sessions) at(now time.Time) string {
	timeout := SessionIdleTimeout
	if s.background {
		timeout = SessionBackgroundTimeout
	}
	if s.id == "" || now.Sub(s.last) >= timeout {
		s.id = newID(now)
	}
	if now.After(s.last) {
		s.last = now
	}
	return s.id
}

// toBackground records that the app went to the background at now.
func (s *sessions) toBackground(now time.Time) {
	s.background = true
	if now.After(s.last) {
		s.last = now
	}
}

// toForeground records that the app came back at now: the session ends if
// the app stayed in the background for SessionBackgroundTimeout or more.
func (s *sessions) toForeground(now time.Time) {
	if s.background && now.Sub(s.last) >= SessionBackgroundTimeout {
		s.id = ""
	}
	s.background = false
	if now.After(s.last) {
		s.last = now
	}
}

// reset ends the session (Reset: another user).
func (s *sessions) reset() { s.id = "" }
