// Package dashboard is the web page served by `conveyor up`: a live list
// of jobs (newest first, filtered, paginated), each job's record, log and
// outputs, a retry button, drag-and-drop uploads into the input bucket, a
// throughput chart and, when configured, the volume's snapshots; it also
// serves the Prometheus metrics it is given at /metrics, behind the same
// checks as every page.
//
// It keeps an in-memory index of every job (a few hundred bytes each),
// built by one background scan of the state bucket, kept current by
// Observe/Touch calls from the pipeline and by periodic rescans, so a page
// view never reads all records. Assets are embedded; nothing is built.
//
// It is not an API for programs (the S3 buckets and the CLI are), and it
// holds no credentials of its own beyond the S3 client it is given: downloads
// and uploads go through the server, never through presigned URLs.
package dashboard
