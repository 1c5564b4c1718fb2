package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/s3server"
	"github.com/conveyorhq/conveyor/internal/worker"
)

func (c FileConfig) processorConfig() processor.Config {
	pc := processor.Config{Name: c.Processor.Name, Command: c.Processor.Command, Timeout: c.Processor.Timeout,
		Sandbox: c.Processor.Sandbox, Network: c.Processor.Network, Limits: c.processorLimits(), Hide: c.processorHide()}
	if c.Processor.Bundle != "" {
		if dir, err := c.bundleDir(); err == nil {
			pc.Command = c.bundleCommand(dir) // bundle.go
			pc.Env = append(pc.Env, "CONVEYOR_BUNDLE_DIR="+dir)
		}
	}
	return pc
}

func (c FileConfig) workerConfig() worker.Config {
	return worker.Config{
		OutputBucket: c.Buckets.Output, Backoff: c.Retry.Backoff, MaxBackoff: c.Retry.MaxBackoff,
		Lease: c.Worker.Lease, StallTimeout: c.Worker.StallTimeout, LogMaxBytes: c.Worker.LogMaxBytes,
	}
}

func (c FileConfig) orchestratorConfig() orchestrator.Config {
	return orchestrator.Config{
		InputBucket: c.Buckets.Input,
		Prefixes:    c.Filter.Prefixes,
		Suffixes:    c.Filter.Suffixes,
		MaxAttempts: c.Retry.MaxAttempts,
	}
}

func (c FileConfig) volumePath() string {
	if c.Volume != "" {
		return c.Volume
	}
	return local.Paths{Root: c.DataDir}.Volume()
}

// validateComponents checks every component's configuration before
// anything starts, so a bad value is a usage error (exit 2), not a failure.
func (c FileConfig) validateComponents() error {
	if err := c.checkBundle(); err != nil {
		return err
	}
	// A bundle's processor exists once the bundle is opened (prepareProcessor).
	if c.Processor.Bundle == "" {
		if _, err := processor.New(c.processorConfig()); err != nil {
			return usageErrorf("%v", err)
		}
	}
	if err := c.workerConfig().WithDefaults().Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	if err := c.orchestratorConfig().WithDefaults().Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	return nil
}

// pipelineConfig maps the file configuration onto `conveyor up`'s.
func (c FileConfig) pipelineConfig() local.Config {
	return local.Config{
		DataDir:         c.DataDir,
		S3Addr:          c.S3.Addr,
		Region:          c.S3.Region,
		Credentials:     local.Credentials{AccessKeyID: c.S3.AccessKeyID, SecretAccessKey: c.S3.SecretAccessKey},
		Buckets:         local.Buckets{Input: c.Buckets.Input, Output: c.Buckets.Output, State: c.Buckets.State},
		Orchestrator:    c.orchestratorConfig(),
		Worker:          c.workerConfig(),
		Processor:       c.processorConfig(),
		Workers:         c.Workers,
		Reconcile:       c.Reconcile.Interval,
		ReconcileBudget: c.Reconcile.Budget,
		SweepEvery:      c.Reconcile.SweepEvery,
		Retention:       c.Retention.Finished,
	}
}

// conn is how a client command reaches the object store.
type conn struct {
	cfg      FileConfig
	S3       *s3.Client
	Store    *jobstore.Store
	Endpoint string // "" on AWS
	// Files is where the embedded server keeps objects as plain files
	// (<data>/s3/<bucket>/<key>), when the store is a local `conveyor up`.
	Files string
}

// awsOptions are the credentials s3.access_key_id configures, if any.
func awsOptions(c FileConfig) []func(*awsconfig.LoadOptions) error {
	if c.S3.AccessKeyID == "" {
		return nil
	}
	return []func(*awsconfig.LoadOptions) error{awsconfig.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: c.S3.AccessKeyID, SecretAccessKey: c.S3.SecretAccessKey, Source: "conveyor config"}, nil
	}))}
}

// connect reaches the store: the buckets of an AWS stack with --stack
// (stack.go), Amazon S3 when s3.aws is set, another S3 when
// s3.endpoint is (credentials from the usual AWS chain unless configured:
// the instance role on EC2), otherwise the `conveyor up` running on the
// data dir.
func connect(ctx context.Context, c FileConfig) (*conn, error) {
	if c.Stack != "" {
		var err error
		if c, err = useStack(ctx, c, c.getenv); err != nil { // stack.go
			return nil, err
		}
	}
	if c.S3.Endpoint != "" || c.S3.AWS {
		client, err := awsClient(ctx, c)
		if err != nil {
			return nil, err
		}
		return &conn{cfg: c, S3: client, Store: jobstore.New(client, c.Buckets.State), Endpoint: c.S3.Endpoint}, nil
	}
	paths := local.Paths{Root: c.DataDir}
	ri, err := local.ReadRunInfo(paths)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no conveyor up is running with data dir %s; start it with 'conveyor up --data-dir %s' (or set s3.endpoint to use another S3)", c.DataDir, c.DataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", paths.RunInfo(), err)
	}
	if ri.External {
		return nil, fmt.Errorf("the conveyor up on data dir %s uses the S3 store at %s: set s3.endpoint (and its credentials) for this command too, as in that conveyor up's configuration", c.DataDir, ri.Endpoint)
	}
	creds, err := local.LoadCredentials(paths)
	if err != nil {
		return nil, fmt.Errorf("read credentials of data dir %s: %w", c.DataDir, err)
	}
	if c.S3.AccessKeyID != "" {
		creds = local.Credentials{AccessKeyID: c.S3.AccessKeyID, SecretAccessKey: c.S3.SecretAccessKey}
	}
	client := s3server.NewClient(ri.Endpoint, creds.AccessKeyID, creds.SecretAccessKey, ri.Region)
	return &conn{cfg: c, S3: client, Store: jobstore.New(client, c.Buckets.State), Endpoint: ri.Endpoint, Files: paths.S3Root()}, nil
}

func awsClient(ctx context.Context, c FileConfig) (*s3.Client, error) {
	opts := append(awsOptions(c), awsconfig.WithRegion(c.S3.Region))
	if c.S3.CAFile != "" {
		pem, err := os.ReadFile(c.S3.CAFile)
		if err != nil {
			return nil, usageErrorf("s3.ca_file: %v", err)
		}
		opts = append(opts, awsconfig.WithCustomCABundle(bytes.NewReader(pem)))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	return s3.NewFromConfig(ac, func(o *s3.Options) {
		if c.S3.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.S3.Endpoint)
			o.UsePathStyle = true
			// S3-compatible servers often keep no checksums; Conveyor
			// checks SHA-256 itself, so the SDK's notice is noise.
			o.DisableLogOutputChecksumValidationSkipped = true
		}
	}), nil
}
