package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/jsii-runtime-go"
)

// Key prefixes in the state bucket.
const (
	JobRecordPrefix = "jobs/" // job records (internal/jobstore.Prefix)
	JobLogPrefix    = "logs/" // job logs the worker uploads
)

// Storage holds the four buckets. Input and output are distinct buckets, so
// an output object can never trigger a job.
type Storage struct {
	Input, Output, State, Logs awss3.Bucket
}

func newStorage(stack awscdk.Stack) *Storage {
	abortUploads := &awss3.LifecycleRule{
		Id:                                  jsii.String("abort-incomplete-multipart-uploads"),
		AbortIncompleteMultipartUploadAfter: awscdk.Duration_Days(jsii.Number(7)),
	}
	logs := awss3.NewBucket(stack, jsii.String("LogBucket"), &awss3.BucketProps{
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		// Server access logging only delivers to SSE-S3 buckets.
		Encryption:      awss3.BucketEncryption_S3_MANAGED,
		EnforceSSL:      jsii.Bool(true),
		ObjectOwnership: awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		RemovalPolicy:   awscdk.RemovalPolicy_RETAIN,
		LifecycleRules: &[]*awss3.LifecycleRule{
			{Id: jsii.String("expire-logs"), Expiration: awscdk.Duration_Days(jsii.Number(90))},
			abortUploads,
		},
	})
	bucket := func(id, logPrefix string, versioned bool, rules ...*awss3.LifecycleRule) awss3.Bucket {
		return awss3.NewBucket(stack, jsii.String(id), &awss3.BucketProps{
			BlockPublicAccess:      awss3.BlockPublicAccess_BLOCK_ALL(),
			Encryption:             awss3.BucketEncryption_S3_MANAGED,
			EnforceSSL:             jsii.Bool(true),
			ObjectOwnership:        awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
			Versioned:              jsii.Bool(versioned),
			ServerAccessLogsBucket: logs,
			ServerAccessLogsPrefix: jsii.String(logPrefix),
			// Data outlives the stack: `cdk destroy` leaves the buckets.
			RemovalPolicy:  awscdk.RemovalPolicy_RETAIN,
			LifecycleRules: &rules,
		})
	}
	return &Storage{
		// Versioned so a job keys on the object's version ID: re-uploading
		// a key is a new job, a duplicated event is not.
		Input: bucket("InputBucket", "s3/input/", true,
			&awss3.LifecycleRule{
				Id:                          jsii.String("expire-old-versions"),
				NoncurrentVersionExpiration: awscdk.Duration_Days(jsii.Number(30)),
			},
			abortUploads),
		Output: bucket("OutputBucket", "s3/output/", false, abortUploads),
		State: bucket("StateBucket", "s3/state/", false,
			&awss3.LifecycleRule{
				Id:         jsii.String("expire-job-logs"),
				Prefix:     jsii.String(JobLogPrefix),
				Expiration: awscdk.Duration_Days(jsii.Number(90)),
			},
			abortUploads),
		Logs: logs,
	}
}
