// Package jobevents announces job state changes, as AWS Batch does for its
// jobs: one event per change, detail-type "Conveyor Job State Change", on
// an EventBridge bus (the default one unless told), so users wire
// notifications or next steps with a rule.
//
// Detail is the event's payload (its JSON Schema is
// docs/events/job-state-change.schema.json); Publisher is the bus, with
// EventBridge its AWS driver; Emitter turns record writes (a worker's or
// an orchestrator's OnChange hook) into events, in the background and at
// best effort: a failed put is logged and counted, never fails a job.
//
// It is not a delivery guarantee: an event lost with its process is not
// sent again. The job record stays the truth.
package jobevents
