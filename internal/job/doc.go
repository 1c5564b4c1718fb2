// Package job defines what a job is: its deterministic ID, the record kept
// in the state bucket, its states and the transitions between them.
//
// It is pure: no SDK, no I/O. Storing records is jobstore's work, deciding
// when to create one is the orchestrator's, running one is the worker's.
package job
