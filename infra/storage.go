package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/jsii-runtime-go"
)

// Key prefixes in the state bucket.
const (
	JobRecordPrefix   = "jobs/"      // job records (internal/jobstore.Prefix)
	JobLogPrefix      = "logs/"      // job logs the worker uploads
	ActiveIndexPrefix = "active/"    // index markers of unfinished jobs (never expire)
	DoneIndexPrefix   = "done/"      // index markers of finished jobs (expire with the history)
	ReconcilePrefix   = "reconcile/" // the reconciler's cursors
)

// FinishedTagKey=FinishedTagValue is the object tag a job record gets when
// it is written in a terminal state; the state bucket's lifecycle rule
// expires the tagged records, and no other.
const (
	FinishedTagKey   = "conveyor-finished"
	FinishedTagValue = "true"
)

// Lifecycle periods, in days.
const (
	AbortUploadsAfterDays = 7
	JobLogDays            = 90
)

// Storage holds the four buckets. Input and output are distinct buckets, so
// an output object can never trigger a job.
type Storage struct {
	Input, Output, State, Logs awss3.Bucket
}

func newStorage(stack awscdk.Stack, params *Parameters) *Storage {
	abortUploads := &awss3.LifecycleRule{
		Id:                                  jsii.String("abort-incomplete-multipart-uploads"),
		AbortIncompleteMultipartUploadAfter: awscdk.Duration_Days(jsii.Number(AbortUploadsAfterDays)),
	}
	// Finished history leaves the state bucket after HistoryRetentionDays
	// (counted from the object's last write: a record's terminal write, a
	// marker's creation). Unfinished records (untagged), active/ markers,
	// the reconciler's cursors and anything else are never expired.
	history := awscdk.Duration_Days(params.HistoryRetentionDays.ValueAsNumber())
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
				Expiration: awscdk.Duration_Days(jsii.Number(JobLogDays)),
			},
			&awss3.LifecycleRule{
				Id:         jsii.String("expire-finished-job-records"),
				Prefix:     jsii.String(JobRecordPrefix),
				TagFilters: &map[string]interface{}{FinishedTagKey: FinishedTagValue},
				Expiration: history,
			},
			&awss3.LifecycleRule{
				Id:         jsii.String("expire-done-markers"),
				Prefix:     jsii.String(DoneIndexPrefix),
				Expiration: history,
			},
			abortUploads),
		Logs: logs,
	}
}
