package s3server

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// NewClient returns an S3 client for endpoint with path-style addressing and
// static credentials. It reads no environment or shared AWS configuration.
func NewClient(endpoint, accessKey, secretKey, region string) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(endpoint),
		Region:       region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
		// The gateway stores no checksum for multipart objects; the SDK
		// would say so on stderr for every such GET. Conveyor checks the
		// SHA-256 of what it reads itself.
		DisableLogOutputChecksumValidationSkipped: true,
	})
}

// ensureBuckets creates every bucket that does not exist yet; one that
// exists already counts as created, so that restarting is harmless.
func ensureBuckets(ctx context.Context, client *s3.Client, buckets []string) error {
	for _, b := range buckets {
		_, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)})
		var owned *types.BucketAlreadyOwnedByYou
		var exists *types.BucketAlreadyExists
		if err == nil || errors.As(err, &owned) || errors.As(err, &exists) {
			continue
		}
		return fmt.Errorf("create bucket %q: %w", b, err)
	}
	return nil
}

// enableVersioning switches versioning on for buckets. Switching it on for
// a bucket where it is on already changes nothing, and a bucket that held
// objects before keeps them as version "null", readable as before.
func enableVersioning(ctx context.Context, client *s3.Client, buckets []string) error {
	for _, b := range buckets {
		_, err := client.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{
			Bucket:                  aws.String(b),
			VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
		})
		if err != nil {
			return fmt.Errorf("turn on versioning of bucket %q: %w", b, err)
		}
	}
	return nil
}
