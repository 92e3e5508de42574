package warehouse

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Subject is whose data Forget deletes: exactly one id is set.
type Subject struct {
	DeviceID, InstallID, UserID string
}

func (s Subject) filter() (string, error) {
	var set []string
	if s.DeviceID != "" {
		set = append(set, "device_id = "+quoteString(s.DeviceID))
	}
	if s.InstallID != "" {
		set = append(set, "install_id = "+quoteString(s.InstallID))
	}
	if s.UserID != "" {
		set = append(set, "user_id = "+quoteString(s.UserID))
	}
	if len(set) != 1 {
		return "", errors.New("give exactly one of a device id, an install id or a user id")
	}
	return set[0], nil
}

// Forget issues the mutations that delete a subject's rows from every table
// holding per-device data, and returns them: events (the subject's events;
// for a user, every event of the sessions in which they were identified),
// session_parts (the sessions of those events; the whole device for a
// device id) and anomalies (findings about those devices, and the devices
// taken out of the device lists of cohort findings). events_per_minute
// holds counts only. ClickHouse applies mutations in the background,
// rewriting every part that holds matching rows: PendingMutations says
// when they are done. A subject without data issues the events mutation
// only (rows may still be on their way through Kafka: run it again later).
func (c *Client) Forget(ctx context.Context, s Subject) ([]string, error) {
	filter, err := s.filter()
	if err != nil {
		return nil, err
	}
	db := quoteIdent(c.Database())
	res, err := c.Query(ctx, "SELECT DISTINCT device_id, session_id FROM "+db+".events WHERE "+filter, 0)
	if err != nil {
		return nil, fmt.Errorf("find the subject's devices: %w", err)
	}
	devices, sessions := map[string]bool{}, map[string]bool{}
	if s.DeviceID != "" {
		devices[s.DeviceID] = true
	}
	for _, r := range res.Rows {
		devices[r[0]] = true
		if r[1] != "" {
			sessions[r[1]] = true
		}
	}
	events := filter
	if s.UserID != "" && len(sessions) > 0 {
		// The sessions in which the user was identified are theirs, also
		// the events sent before the login.
		events = "(" + filter + " OR (device_id IN " + list(devices) + " AND session_id IN " + list(sessions) + "))"
	}
	stmts := []string{"ALTER TABLE " + db + ".events DELETE WHERE " + events}
	switch {
	case s.DeviceID != "":
		stmts = append(stmts, "ALTER TABLE "+db+".session_parts DELETE WHERE "+filter)
	case len(sessions) > 0:
		stmts = append(stmts, "ALTER TABLE "+db+".session_parts DELETE WHERE device_id IN "+list(devices)+" AND session_id IN "+list(sessions))
	}
	if len(devices) > 0 {
		in := list(devices)
		stmts = append(stmts,
			"ALTER TABLE "+db+".anomalies DELETE WHERE device_id IN "+in,
			"ALTER TABLE "+db+".anomalies UPDATE devices = arrayFilter(d -> NOT has(["+strings.Trim(in, "()")+"], d), devices) WHERE hasAny(devices, ["+strings.Trim(in, "()")+"])")
	}
	for i, q := range stmts {
		if err := c.Exec(ctx, q); err != nil {
			return stmts[:i], err
		}
	}
	return stmts, nil
}

// PendingMutations counts the mutations of the database not done yet.
func (c *Client) PendingMutations(ctx context.Context) (int, error) {
	res, err := c.Query(ctx, "SELECT count() FROM system.mutations WHERE database = "+quoteString(c.Database())+" AND is_done = 0", 0)
	if err != nil {
		return 0, err
	}
	if len(res.Rows) != 1 {
		return 0, errors.New("system.mutations: no count")
	}
	return strconv.Atoi(res.Rows[0][0])
}

// quoteString is a ClickHouse string literal.
func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// list is ('a', 'b', ...) of the set's members, sorted.
func list(set map[string]bool) string {
	items := make([]string, 0, len(set))
	for v := range set {
		items = append(items, quoteString(v))
	}
	slices.Sort(items)
	return "(" + strings.Join(items, ", ") + ")"
}
