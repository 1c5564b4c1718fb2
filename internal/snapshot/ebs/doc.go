// Package ebs is the snapshot driver for AWS: the worker's data volume is
// an EBS volume, snapshotted by EBS (on a schedule by the DLM policy that
// infra/ defines, on demand by Create). List shows the snapshots carrying
// the configured tags; Restore swaps the instance's data volume for a new
// one made from a snapshot, printing each step. It talks to the EC2 API
// only; it is not used by `conveyor up`.
package ebs
