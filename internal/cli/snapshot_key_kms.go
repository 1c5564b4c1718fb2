package cli

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	snaplocal "github.com/conveyorhq/conveyor/internal/snapshot/local"
	"github.com/conveyorhq/conveyor/internal/snapshot/local/kmskey"
)

// snapshotKMSOnly refuses a password beside snapshot.kms_key: a
// repository's key is wrapped by one or the other, and guessing which
// one was meant could create a repository the operator cannot open.
func (c FileConfig) snapshotKMSOnly() error {
	switch {
	case c.Snapshot.PasswordFile != "":
		return usageErrorf("snapshot.kms_key and snapshot.password_file are both set: the snapshot repository's key is wrapped by one of them; keep the one it was created with and unset the other")
	case c.getenv != nil && c.getenv("CONVEYOR_SNAPSHOT_PASSWORD") != "":
		return usageErrorf("snapshot.kms_key and CONVEYOR_SNAPSHOT_PASSWORD are both set: the snapshot repository's key is wrapped by one of them; keep the one it was created with and unset the other")
	}
	return nil
}

// snapshotKMSKey is the KMS wrapper of snapshot.kms_key, through the
// usual AWS chain in s3.region (serviceConfig); AWS_ENDPOINT_URL_KMS
// points it elsewhere.
func (c FileConfig) snapshotKMSKey() (snaplocal.KeyWrapper, error) {
	if err := c.snapshotKMSOnly(); err != nil {
		return nil, err
	}
	return c.kmsWrapper(c.Snapshot.KMSKey, "snapshot.kms_key")
}

// kmsWrapper is the KMS wrapper of key (snapshot.kms_key's, or 'snapshot
// key passwd --new-kms-key'); what names its setting in errors.
func (c FileConfig) kmsWrapper(key, what string) (snaplocal.KeyWrapper, error) {
	// Loading reads files and the environment only; no call is made.
	ac, err := serviceConfig(context.Background(), c)
	if err != nil {
		return nil, usageErrorf("%s: %v", what, err)
	}
	client := kms.NewFromConfig(ac, func(o *kms.Options) {
		if c.getenv == nil {
			return
		}
		if ep := c.getenv("AWS_ENDPOINT_URL_KMS"); ep != "" {
			o.BaseEndpoint = aws.String(ep)
		}
	})
	return kmskey.New(client, key), nil
}
