package daemon

import "time"

// summaryInterval is the snapshot period in force (the last SIGHUP's), which
// each health row records as summary_interval_s: the fleet view calls a
// host silent after three of its own intervals without a row. For `once`
// it is --summary-interval as given, which then says how often cron runs
// it (the default 5m is the seed job's schedule).
func (d *daemon) summaryInterval() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live.SummaryInterval
}
