// Package notify POSTs every job state change to the webhooks a user
// configured (notify.webhooks), so that a program learns at once that a
// job succeeded or died.
//
// The body is the JSON of jobevents.Detail, the same payload the AWS job
// events carry (docs/events/job-state-change.schema.json). Each request
// is signed: the Conveyor-Signature header is "t=<unix seconds>,v1=<hex
// HMAC-SHA256 of the secret over t + "." + body>" (see Sign and Verify),
// and Conveyor-Event-Id names the change, the same on every retry of it,
// so that a receiver can refuse forgeries, replays and duplicates.
//
// Changed never blocks: each webhook has a bounded queue, whose overflow
// is counted and logged, and one goroutine delivering it in order,
// retrying connection errors, timeouts, 5xx, 408 and 429 with
// exponential backoff and full jitter. Stop drains the queues for a
// bounded time.
//
// It is not a delivery guarantee: a change still queued when the process
// ends, or given up after the last retry, is not sent again. The job
// record stays the truth (`conveyor jobs`, the state bucket).
package notify
