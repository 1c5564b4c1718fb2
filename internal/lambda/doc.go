// Package lambda is the code of the stack's two Lambda functions, one
// bootstrap told apart by CONVEYOR_LAMBDA_ROLE (EnvRole):
//
//   - the orchestrator turns the S3 notification (or EventBridge "Object
//     Created" event) that invokes it into jobs, with the same orchestrator
//     code as `conveyor up`, and dispatches them through SSM Run Command to
//     the EC2 worker;
//   - the reconciler runs one reconciliation per EventBridge schedule's
//     event, stopping before the invocation's deadline, and reports each
//     pass as CloudWatch embedded metrics on stdout.
//
// Handler.Handle is the functions' handler; NewFromEnv wires it from the
// environment variables the stack sets (see the Env* constants) once per
// cold start. Its configuration is read here rather than in internal/cli,
// the home of every other CONVEYOR_* variable, so that the bootstrap does not
// link the CLI, cobra or the embedded S3 server.
//
// It never reads object data, and it does not run jobs.
package lambda
