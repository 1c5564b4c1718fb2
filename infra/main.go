// Command infra is Conveyor's AWS CDK app: one stack with the buckets, the
// orchestrator Lambda, the EC2 worker and its data volume, the snapshot
// policy and the SSM document. `cdk synth` (or `go run .`) writes cdk.out;
// see README.md for deploying it.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/jsii-runtime-go"
)

func main() {
	os.Exit(run())
}

func run() int {
	defer jsii.Close()
	props := StackProps{}.WithDefaults()
	app := newApp("")
	// The conveyor.yaml to deploy: cdk -c config=PATH (make deploy
	// CONFIG=PATH).
	if v, ok := app.Node().TryGetContext(jsii.String(ConfigContextKey)).(string); ok {
		props.ConfigPath = v
	}
	if v, ok := app.Node().TryGetContext(jsii.String(ImageContextKey)).(string); ok {
		props.WorkerImageID = v
	}
	if props.WorkerImageID == "" {
		fmt.Fprintln(os.Stderr, "conveyor infra: warning: no pinned worker AMI in cdk.json (workerImageId): `make deploy` pins the current one on first use (or pass --parameters WorkerImageId=ami-...)")
	}
	if err := checkInputs(props); err != nil {
		fmt.Fprintln(os.Stderr, "conveyor infra:", err)
		return 1
	}
	NewConveyorStack(app, "Conveyor", props)
	app.Synth(synthOptions)
	return 0
}

// checkInputs reports a missing build output before CDK does, with the
// command that builds it.
func checkInputs(p StackProps) error {
	for _, f := range []string{filepath.Join(p.LambdaAssetDir, "bootstrap"), p.WorkerBinary} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s is missing: build it with `make -C .. build-arm64 build-lambda` (or `make synth`)", f)
		}
	}
	if _, err := readSSMDocument(p.SSMDocumentPath); err != nil {
		return err
	}
	a, err := loadConfig(p.ConfigPath)
	if err != nil {
		return err
	}
	for _, w := range configWarnings(a, p) {
		fmt.Fprintln(os.Stderr, "conveyor infra: warning:", w)
	}
	return nil
}
