// Package jobstore keeps job records in the state bucket, one JSON object
// per job at jobs/<id>.json, through the S3 API only (Amazon S3 or the
// embedded server).
//
// Every write is conditional: Create uses If-None-Match so a job is created
// once however many times its event arrives, and Update is a
// compare-and-swap on the record's ETag (If-Match), so two writers never
// overwrite each other's changes.
package jobstore
