// Package metrics is Conveyor's Prometheus instrumentation for `conveyor
// up`: a dedicated registry (never the client library's global one) with
// the job metrics (fed by jobmetrics.Tracker, the observation point the
// EMF metrics on AWS share), dispatches, reconcile passes, scheduled
// snapshot runs, webhook deliveries, build information and the Go and
// process collectors, and the HTTP handler that exposes them.
//
// Every name starts with conveyor_ and is in base units (_seconds,
// _bytes, _total for counters). Labels take a small, fixed set of values
// (a state, a phase, a result, a webhook's index): never an object key or
// a job ID. Every labelled series exists from the start (at 0), so the
// alert rules and the Grafana dashboard in deploy/ are checked against
// one scrape of a fresh registry.
//
// It is not an API to read jobs from (the store and the CLI are), and it
// does not listen by itself: the dashboard mounts Handler at /metrics, or
// `conveyor up` serves it on metrics.addr.
package metrics
