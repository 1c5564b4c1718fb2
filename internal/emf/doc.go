// Package emf writes CloudWatch embedded metric format (EMF) log lines:
// one JSON object per line whose "_aws" member tells CloudWatch Logs which
// top-level members are metrics (with units) and which are dimensions, so
// a line written to a log group (a Lambda function's stdout, SSM Run
// Command output sent to CloudWatch) becomes metrics with no API call.
//
// Extract reads a line back as CloudWatch does; tests use it to check what
// is written. The package knows nothing of jobs: callers name the metrics.
package emf
