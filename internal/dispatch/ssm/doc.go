// Package ssm is the dispatch driver that delivers a job ID to an EC2
// worker with SSM Run Command: among the workers whose SSM agent is online
// (a fixed instance, or any instance carrying a tag) it picks the one with
// the most free job slots (its vCPUs or its conveyor:slots tag, less the
// commands of Conveyor's document still executing there), holds the job
// (dispatch.ErrFull) when every slot is taken, optionally brings a worker
// up when none is online (starting a stopped instance, or raising an Auto
// Scaling group's desired capacity from zero), and calls SendCommand with
// Conveyor's document (deploy/ssm/conveyor-run-job.yaml), passing only the
// job ID and the execution timeout as parameters.
//
// It is not a scheduler and does not watch commands: it returns the SSM
// command ID as the delivery reference and forgets it; the worker records
// the outcome in the job record. It does not deploy the document or the
// IAM permissions it needs (infra/ does), and it never sends an object key.
package ssm
