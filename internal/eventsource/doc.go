// Package eventsource receives an S3-compatible store's bucket
// notifications for `conveyor up` when the store is not the embedded
// server: a subscription to a NATS subject (versitygw's and MinIO's NATS
// targets publish there) and an HTTP webhook that takes authenticated POSTs
// (MinIO's webhook target). Each hands the raw notification body to a
// callback that only queues it; parsing and deciding stay in s3event and
// the orchestrator.
//
// Neither source is reliable on its own: a message published while the
// subscription is down, or a POST the store gave up on, is lost. The
// reconciler's sweep of the input bucket finds those objects.
package eventsource
