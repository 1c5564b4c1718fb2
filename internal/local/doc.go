// Package local wires the whole pipeline into one process for
// `conveyor up`: the embedded S3 server, its object-created hook, the
// orchestrator, the in-process dispatcher running the worker, and the
// reconciler. With an ExternalStore (store.go) it starts no server: the
// buckets are in the user's S3-compatible store, checked at start, and its
// notifications arrive from a NATS subject or a webhook (events.go); an
// event that names no version is matched to one (versions.go), and the
// reconciler sweeps the input bucket at every start for uploads made
// while no one listened. The observers of its jobs (Prometheus metrics
// and webhooks) are in observe.go. It owns the data dir's layout:
//
//	<data>/s3/              the embedded server's buckets (posix backend)
//	<data>/s3.versions/     older versions of the versioned input bucket
//	<data>/volume/          the worker's volume: work/<job>/, logs/<job>.log
//	<data>/credentials.json S3 credentials, mode 0600
//	<data>/run.json         the running pipeline's endpoint and pid
//	<data>/lock             held by the running `conveyor up`
//	<data>/nats/            the embedded NATS server's store (--nats embedded)
//	<data>/nats-credentials.json  its user and password, mode 0600
//
// With NATS (cluster.go) the orchestrator dispatches through the
// dispatch/nats driver and this process's workers, if any, pull from the
// same stream as `conveyor worker serve` on other machines; the
// reconciler then follows the rules of a remote dispatcher.
//
// Everything here is wiring; the decisions live in the packages it wires.
package local
