// Package cwlogs sends job logs to Amazon CloudWatch Logs: the worker's
// LogSink (internal/worker) on AWS, one log stream per job attempt,
// "<job-id>/<attempt>", in the stack's job log group. The log in the state
// bucket (s3://<state>/logs/<job>.log) stays the whole record; CloudWatch
// is for searching and following jobs with Logs Insights beside the
// functions' and the commands' logs.
package cwlogs
