// Package ssm holds Conveyor's SSM Command document, conveyor-run-job.yaml,
// so that the CDK app deploys and the tests check the very same bytes. It
// is data only: the driver that sends the document is
// internal/dispatch/ssm.
package ssm

import _ "embed"

// Document is conveyor-run-job.yaml: a schemaVersion 2.2 Command document
// with the parameters JobId (passed to the script as the environment
// variable SSM_JobId) and ExecutionTimeout (seconds, as a string).
//
//go:embed conveyor-run-job.yaml
var Document []byte
