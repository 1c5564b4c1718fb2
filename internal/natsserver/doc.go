// Package natsserver runs the NATS server with JetStream inside the
// process, for `conveyor up --nats embedded`: its store under the data
// dir, listening on loopback unless told otherwise, and always requiring
// a user and password (generated on first start and kept mode 0600 in the
// data dir, like the S3 credentials). `conveyor worker serve` processes on
// other machines connect to it with those credentials.
//
// It is one server, not a cluster: a team that needs the queue to survive
// the loss of a machine runs a NATS cluster and points cluster.nats at it.
package natsserver
