// Package kmskey keeps a snapshot repository's master key with AWS KMS:
// its Wrapper, a local.KeyWrapper, has KMS Encrypt the master key under a
// KMS key and Decrypt it when the repository is opened, both with an
// encryption context naming the repository, so that reading the snapshots
// takes an IAM grant on that key (kms:Encrypt to create the repository,
// kms:Decrypt to open it) instead of a password on disk.
//
// It is the only part of the snapshot engine that talks to KMS; kmstest
// is a fake KMS endpoint speaking the real wire protocol, for tests. It
// does not create, rotate or grant KMS keys: that is the operator's (or
// the AWS stack's) business.
package kmskey
