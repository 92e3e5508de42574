package eval

import (
	"maps"
	"slices"
	"time"

	"causality.dev/services/internal/sim"
)

// The fixed-threshold baseline, like the prototype's three checks:
//   - DeviceMinute: a device sending more than this many events in one
//     minute (the prototype's max threshold) is named;
//   - AppMinute: the app receiving more than this many events in one minute
//     (its per-minute rate check) raises an alert that names no device;
//   - DeviceWindow: a device sending more than this many events in a fixed
//     10-minute window (its fixed-window count) is named.
// Each threshold is the largest value seen on a genuine fleet of another
// seed, plus one, chosen once and used for every scenario.

// Thresholds of the baseline rules.
type Thresholds struct {
	DeviceMinute, AppMinute, DeviceWindow int
}

const countWindow = 10 * time.Minute

// counter counts events per device per minute, per device per fixed
// 10-minute window and per app per minute, in simulated event time.
type counter struct {
	window    int64
	devMinute map[key]int
	devWindow map[key]int
	appMinute map[int64]int
}

type key struct {
	device string
	start  int64
}

func newCounter(window time.Duration) *counter {
	return &counter{window: window.Milliseconds(), devMinute: map[key]int{}, devWindow: map[key]int{}, appMinute: map[int64]int{}}
}

func (c *counter) add(t sim.Timed) {
	ms := t.Event.GetTimestampMs() - t.Skew.Milliseconds()
	d := t.Event.GetDeviceId()
	m := ms - ms%c.window
	w := ms - ms%countWindow.Milliseconds()
	c.devMinute[key{d, m}]++
	c.devWindow[key{d, w}]++
	c.appMinute[m]++
}

// calibrate returns the largest counts seen, plus one.
func (c *counter) calibrate() Thresholds {
	maxOf := func(m map[key]int) int {
		n := 0
		for _, v := range m {
			n = max(n, v)
		}
		return n
	}
	app := 0
	for _, v := range c.appMinute {
		app = max(app, v)
	}
	return Thresholds{DeviceMinute: maxOf(c.devMinute) + 1, AppMinute: app + 1, DeviceWindow: maxOf(c.devWindow) + 1}
}

// apply fires the rules: devices named at the end of the window that
// crossed a threshold, the number of alerts and how many named no device.
func (c *counter) apply(th Thresholds) (Named, int, int) {
	named := Named{}
	alerts, unattributed := 0, 0
	for _, k := range slices.SortedFunc(maps.Keys(c.devMinute), cmpKey) {
		if c.devMinute[k] >= th.DeviceMinute {
			named[k.device] = append(named[k.device], k.start+c.window)
			alerts++
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(c.devWindow), cmpKey) {
		if c.devWindow[k] >= th.DeviceWindow {
			named[k.device] = append(named[k.device], k.start+countWindow.Milliseconds())
			alerts++
		}
	}
	for _, v := range c.appMinute {
		if v >= th.AppMinute {
			alerts++
			unattributed++
		}
	}
	return named, alerts, unattributed
}

func cmpKey(a, b key) int {
	if a.start != b.start {
		return int(a.start - b.start)
	}
	if a.device < b.device {
		return -1
	}
	if a.device > b.device {
		return 1
	}
	return 0
}
