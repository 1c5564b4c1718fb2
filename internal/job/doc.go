// Package job defines what a job is: its deterministic ID, the record kept
// in the state bucket, its states and the named transitions between them
// (Claim, Renew, Succeed, Fail, Supersede, HandBack, Retry), and the output
// layout: where a job's files go in the output bucket, and the metadata
// that names the job and input version each output belongs to.
//
// It is pure: no SDK, no I/O. Storing records is jobstore's work, deciding
// when to create one is the orchestrator's, running one is the worker's.
package job
