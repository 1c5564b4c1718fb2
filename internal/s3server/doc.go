// Package s3server runs the embedded S3-compatible object store of
// `conveyor up`: a versitygw gateway with its posix backend (each bucket is a
// directory under the data dir, each object a plain file, metadata in user
// extended attributes) on a loopback address, and an in-process hook that
// reports every created object as an S3 event notification document, the same
// JSON Amazon S3 sends to Lambda.
//
// It is not an S3 client library (use the AWS SDK client from NewClient) and
// not an event queue: Config.OnEvent is called synchronously before the HTTP
// response is sent, so the caller must queue, and must rely on idempotency
// and the reconciler rather than on the hook alone.
//
// Two properties of versitygw leak into the whole process: only one gateway
// may run per process, and starting it changes the working directory of the
// process to the data dir, so every other path in the program must be
// absolute.
package s3server
