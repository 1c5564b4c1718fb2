package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3assets"
	"github.com/aws/jsii-runtime-go"

	"github.com/conveyorhq/conveyor/internal/bundle"
	"github.com/conveyorhq/conveyor/internal/cli"
)

// ConfigContextKey is the CDK context value naming the conveyor.yaml to
// deploy: `cdk deploy -c config=PATH` (make deploy CONFIG=PATH).
const ConfigContextKey = "config"

// Where the worker keeps what belongs to its machine rather than to its
// volume: unpacked processor bundles and their setup stamps (setup changes
// the root filesystem, so a volume restored onto a new instance must not
// carry a stamp saying it was done).
const (
	WorkerMachineDir = "/opt/conveyor"
	WorkerBundleDir  = WorkerMachineDir + "/bundles"
	// WorkerConfigPartPath is the worker's part of conveyor.yaml, as
	// shipped; user data appends it to the stack's own settings.
	WorkerConfigPartPath = "/etc/conveyor/conveyor.deployed.yaml"
)

// DeployedConfig is conveyor.yaml as the stack deploys it: the Lambda's
// filters and retry settings, the notification filters, and the worker's
// configuration and processor bundle, each an S3 asset the worker fetches
// by SHA-256.
type DeployedConfig struct {
	// Path is the file deployed; "" for the defaults.
	Path string
	AWS  cli.AWSConfig
	// WorkerPart is the worker's part of the file (cli.AWSConfig.WorkerConfig).
	WorkerPart   []byte
	ConfigAsset  awss3assets.Asset
	ConfigSHA256 string
	// BundleAsset is the processor bundle's zip (nil without a bundle);
	// the worker keeps it at BundleArchive.
	BundleAsset   awss3assets.Asset
	BundleSHA256  string
	BundleArchive string
}

// loadConfig reads the configuration file for the stack, or returns the
// problems that make it undeployable, and its warnings.
func loadConfig(path string) (cli.AWSConfig, error) {
	a, err := cli.LoadConfigForAWS(path)
	if err != nil {
		return a, fmt.Errorf("%w; fix it and synthesize again (make deploy CONFIG=%s)", err, path)
	}
	return a, nil
}

// newDeployedConfig loads the file and stages its assets: the bundle,
// packed reproducibly (its SHA-256 is its version on the worker), and the
// worker's part of the configuration. It panics, as constructs do, on a
// file the stack cannot deploy; main checks it first with a clear message.
func newDeployedConfig(stack awscdk.Stack, props StackProps) *DeployedConfig {
	a, err := loadConfig(props.ConfigPath)
	if err != nil {
		panic(err)
	}
	d := &DeployedConfig{Path: props.ConfigPath, AWS: a}
	staging, err := os.MkdirTemp("", "conveyor-infra-assets-")
	if err != nil {
		panic(err)
	}
	// The assets are copied into the cloud assembly at synthesis; the
	// staged files may go with the process's temp dir.
	if a.BundleDir != "" {
		var zip bytes.Buffer
		if err := bundle.Pack(a.BundleDir, &zip); err != nil {
			panic(err)
		}
		sum := sha256.Sum256(zip.Bytes())
		d.BundleSHA256 = hex.EncodeToString(sum[:])
		d.BundleArchive = WorkerBundleDir + "/" + d.BundleSHA256 + ".zip"
		name := filepath.Join(staging, "bundle-"+d.BundleSHA256+".zip")
		if err := os.WriteFile(name, zip.Bytes(), 0o644); err != nil {
			panic(err)
		}
		d.BundleAsset = awss3assets.NewAsset(stack, jsii.String("ProcessorBundle"), &awss3assets.AssetProps{Path: jsii.String(name)})
	}
	part, err := a.WorkerConfig(d.BundleArchive, d.BundleSHA256)
	if err != nil {
		panic(err)
	}
	source := d.Path
	if source == "" {
		source = "(none: the defaults)"
	}
	d.WorkerPart = append([]byte("# The worker's part of "+filepath.Base(source)+", deployed by the Conveyor stack.\n"), part...)
	sum := sha256.Sum256(d.WorkerPart)
	d.ConfigSHA256 = hex.EncodeToString(sum[:])
	name := filepath.Join(staging, "conveyor-"+d.ConfigSHA256+".yaml")
	if err := os.WriteFile(name, d.WorkerPart, 0o644); err != nil {
		panic(err)
	}
	d.ConfigAsset = awss3assets.NewAsset(stack, jsii.String("WorkerConfig"), &awss3assets.AssetProps{Path: jsii.String(name)})
	return d
}

// configWarnings are what main prints before synthesizing: the settings
// the stack ignores, and a processor timeout the SSM command would cut.
func configWarnings(a cli.AWSConfig, props StackProps) []string {
	w := append([]string(nil), a.Warnings...)
	if a.ProcessorTimeout >= props.ExecutionTimeout {
		w = append(w, fmt.Sprintf("processor.timeout %s is not below the SSM command's execution timeout %s: SSM would stop a job before the processor's own timeout", a.ProcessorTimeout, props.ExecutionTimeout.Round(time.Second)))
	}
	return w
}

// fileSHA256 is the hex SHA-256 of a file (the worker binary), which user
// data checks after downloading it.
func fileSHA256(name string) string {
	sum, err := bundle.HashFile(name)
	if err != nil {
		panic(err)
	}
	return sum
}
