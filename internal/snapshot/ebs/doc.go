// Package ebs is the snapshot driver for AWS: a worker's data volume is
// an EBS volume, snapshotted by EBS (on a schedule by the DLM policy that
// infra/ defines, on demand by Create). List shows the snapshots carrying
// the configured tags (the stack's backup tag), Volumes where their volumes
// are now; Restore swaps a worker's data volume for a new one made from a
// snapshot (through Standby when the workers' Auto Scaling group holds it
// in service), Clone makes a volume for a new instance; each step is
// printed. It talks to the EC2 and Auto Scaling APIs only; it is not used
// by `conveyor up`, whose snapshots are the local engine's.
package ebs
