package orchestrator

import "time"

// SetNow makes r read its clock from now.
func SetNow(r *Reconciler, now func() time.Time) { r.now = now }

// SetSweepSlack sets how far before the last completed sweep a sweep
// still looks objects up.
func SetSweepSlack(r *Reconciler, d time.Duration) { r.sweepSlack = d }
