package gateway

import "time"

// SetHealthInterval sets how often upstreams are checked, for the test's
// duration.
func SetHealthInterval(t interface{ Cleanup(func()) }, d time.Duration) {
	old := healthInterval
	healthInterval = d
	t.Cleanup(func() { healthInterval = old })
}
