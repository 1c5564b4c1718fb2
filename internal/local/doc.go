// Package local wires the whole pipeline into one process for
// `conveyor up`: the embedded S3 server, its object-created hook, the
// orchestrator, the in-process dispatcher running the worker, and the
// reconciler, and the observers of its jobs (Prometheus metrics and
// webhooks, in observe.go). It owns the data dir's layout:
//
//	<data>/s3/              the embedded server's buckets (posix backend)
//	<data>/s3.versions/     older versions of the versioned input bucket
//	<data>/volume/          the worker's volume: work/<job>/, logs/<job>.log
//	<data>/credentials.json S3 credentials, mode 0600
//	<data>/run.json         the running pipeline's endpoint and pid
//	<data>/lock             held by the running `conveyor up`
//
// Everything here is wiring; the decisions live in the packages it wires.
package local
