// Package dispatch delivers a job ID to a worker. The orchestrator calls a
// Dispatcher; drivers decide how the ID travels: local/ runs the worker in
// this process with a bounded pool, ssm/ sends an SSM Run Command to an EC2
// worker, nats/ publishes to a NATS JetStream work queue that `conveyor
// worker serve` processes pull from. Only the job ID travels, never an object key: the worker reads
// everything else from the job record.
package dispatch
