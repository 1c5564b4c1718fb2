// Package s3event turns object-created notifications into ObjectCreated
// values, whatever carried them: the S3 notification JSON that Lambda
// receives (Records, eventVersion 2.x), the EventBridge "Object Created"
// shape, the embedded server's in-process hook, which emits the same
// Records JSON, and the Records that other S3-compatible stores send to a
// webhook or a NATS subject: MinIO's (with its top-level EventName and Key,
// keys form-encoded, slashes included) and versitygw's (keys verbatim, no
// version ID even in a versioned bucket). It also builds that JSON, so the embedded
// server and Amazon S3 produce one shape.
//
// It does not decide anything about jobs; that is the orchestrator's work.
package s3event
