// Package fleet is the worker's side of an AWS Auto Scaling fleet: a
// watcher that polls the instance metadata service for the group's target
// lifecycle state and for a Spot interruption notice, and when the worker
// is leaving service drains it (no new job, running jobs handed back
// uncounted, job logs shipped to the state bucket) before it completes
// the lifecycle action that lets the group stop or terminate it. It can
// also keep the instance protected from scale-in while jobs run.
//
// It does not decide to scale (the group's policies do) nor run jobs (the
// worker does); it never touches another instance.
package fleet
