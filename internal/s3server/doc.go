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
// Buckets listed in Config.Versioned are versioned, as the input bucket is
// on AWS. The layout on disk is then:
//
//	<DataDir>/<bucket>/<key>          the current version of each object
//	<DataDir>.versions/<bucket>/...   older versions, one directory per key
//
// The versions directory sits beside DataDir because versitygw refuses one
// inside it (it would be listed as a bucket); Config.VersionsDir gives the
// details. Objects stored before a bucket was versioned stay where they
// are, as version "null".
//
// Server.Direct reaches the same storage from inside the process without
// HTTP: the engine's own calls, with its conditional writes, for the
// components `conveyor up` runs beside the server. The engine is wrapped
// once (listingBackend) so that a listing under a directory that does not
// exist is answered at once instead of walking the bucket.
//
// Two properties of versitygw leak into the whole process: only one gateway
// may run per process, and starting it changes the working directory of the
// process to the data dir, so every other path in the program must be
// absolute.
package s3server
