package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsssm"
	"github.com/aws/jsii-runtime-go"
	"gopkg.in/yaml.v3"
)

// newSSMDocument creates Conveyor's Command document from the repo's YAML
// (deploy/ssm/conveyor-run-job.yaml), so what runs on the worker is reviewed
// with the code. It panics when the file is missing or is not a Command
// document: a stack without it could not run any job.
func newSSMDocument(stack awscdk.Stack, path string) awsssm.CfnDocument {
	content, err := readSSMDocument(path)
	if err != nil {
		panic(err)
	}
	return awsssm.NewCfnDocument(stack, jsii.String("RunJobDocument"), &awsssm.CfnDocumentProps{
		DocumentType:   jsii.String("Command"),
		DocumentFormat: jsii.String("YAML"),
		Content:        content,
		// A new content replaces the document (CloudFormation names it), so
		// the Lambda always sends the version deployed with it.
		UpdateMethod: jsii.String("Replace"),
		Tags:         &[]*awscdk.CfnTag{{Key: jsii.String(WorkerTagKey), Value: jsii.String("run-job")}},
	})
}

// readSSMDocument parses the document and checks the shape the stack relies
// on: schema 2.2 with a JobId parameter.
func readSSMDocument(path string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read SSM document: %w (it is deploy/ssm/conveyor-run-job.yaml in the repo)", err)
	}
	var doc map[string]interface{}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("parse SSM document %s: %w", path, err)
	}
	if v, _ := doc["schemaVersion"].(string); v != "2.2" {
		return nil, fmt.Errorf("SSM document %s: schemaVersion is %q, want \"2.2\" (a Command document)", path, v)
	}
	params, _ := doc["parameters"].(map[string]interface{})
	if _, ok := params["JobId"]; !ok {
		return nil, fmt.Errorf("SSM document %s: no JobId parameter; the orchestrator sends only the job ID", path)
	}
	return doc, nil
}
