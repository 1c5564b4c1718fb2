package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdlm"
	"github.com/aws/aws-cdk-go/awscdk/v2/cxapi"
	"github.com/aws/jsii-runtime-go"
)

// TestNag: cdk-nag's AwsSolutions pack runs on the stack (newApp adds it)
// and leaves no unsuppressed error or warning.
func TestNag(t *testing.T) {
	match := assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-|CdkNag"))
	for level, found := range map[string]*[]*cxapi.SynthesisMessage{
		"error":   synth.annotations.FindError(jsii.String("*"), match),
		"warning": synth.annotations.FindWarning(jsii.String("*"), match),
	} {
		for _, m := range *found {
			t.Errorf("cdk-nag %s at %s: %v", level, *m.Id, m.Entry.Data)
		}
	}
	// Every suppression names an AwsSolutions rule and says why.
	n := 0
	for id, r := range synth.json["Resources"].(map[string]interface{}) {
		meta, _ := r.(map[string]interface{})["Metadata"].(map[string]interface{})
		nag, _ := meta["cdk_nag"].(map[string]interface{})
		rules, _ := nag["rules_to_suppress"].([]interface{})
		for _, s := range rules {
			m := s.(map[string]interface{})
			rule, _ := m["id"].(string)
			reason, _ := m["reason"].(string)
			n++
			if !strings.HasPrefix(rule, "AwsSolutions-") || len(reason) < 40 {
				t.Errorf("%s: suppression %q needs an AwsSolutions rule ID and a reason (got %q)", id, rule, reason)
			}
		}
	}
	if n == 0 {
		t.Error("no cdk-nag suppression metadata in the template; is cdk-nag applied?")
	}
}

// TestNoAnnotations: no construct reports an error or a warning at all
// (CDK's own, the built-in CloudFormation validation, cdk-nag).
func TestNoAnnotations(t *testing.T) {
	any := assertions.Match_AnyValue()
	for _, m := range *synth.annotations.FindError(jsii.String("*"), any) {
		t.Errorf("error at %s: %v", *m.Id, m.Entry.Data)
	}
	for _, m := range *synth.annotations.FindWarning(jsii.String("*"), any) {
		t.Errorf("warning at %s: %v", *m.Id, m.Entry.Data)
	}
}

// TestValidation: the stack artifact asks the CLI to validate it, and CDK's
// built-in CloudFormation schema validation ran with its default rules as
// errors and found nothing.
func TestValidation(t *testing.T) {
	art := synth.assembly.GetStackArtifact(synth.conveyor.Stack.ArtifactId())
	if art.ValidateOnSynth() == nil || !*art.ValidateOnSynth() {
		t.Error("stack artifact: validateOnSynth is not set")
	}
	if v := synth.conveyor.Stack.Node().TryGetContext(jsii.String("@aws-cdk/core:validateAgainstDefaultRules")); v != true {
		t.Errorf("@aws-cdk/core:validateAgainstDefaultRules = %v, want true", v)
	}
	raw, err := os.ReadFile(filepath.Join(*synth.assembly.Directory(), "validation-report.json"))
	if err != nil {
		t.Fatalf("no validation report from the built-in CloudFormation validation: %v", err)
	}
	var report struct {
		Title         string `json:"title"`
		PluginReports []struct {
			Summary struct {
				Status     string `json:"status"`
				PluginName string `json:"pluginName"`
			} `json:"summary"`
			// Newer reports say conclusion and name the plugin at the top.
			Conclusion string        `json:"conclusion"`
			PluginName string        `json:"pluginName"`
			Violations []interface{} `json:"violations"`
			Suppressed []struct {
				RuleName       string `json:"ruleName"`
				AcknowledgedAt string `json:"acknowledgedAt"`
			} `json:"suppressedViolations"`
		} `json:"pluginReports"`
	}
	if err := json.Unmarshal(raw, &report); err != nil {
		t.Fatal(err)
	}
	for _, p := range report.PluginReports {
		status := p.Summary.Status + p.Conclusion
		if status != "success" || len(p.Violations) > 0 {
			t.Errorf("%s%s: status %s, violations %v", p.Summary.PluginName, p.PluginName, status, p.Violations)
		}
		// The one finding acknowledged: the pinned AMI (image.go).
		for _, v := range p.Suppressed {
			if v.RuleName != "W9010" || v.AcknowledgedAt != "Conveyor/Worker" {
				t.Errorf("acknowledged finding %s at %s: only W9010 on the pinned worker AMI is", v.RuleName, v.AcknowledgedAt)
			}
		}
	}
}

// TestValidationCatchesErrors proves the built-in validation is on: an app
// built by newApp with one schema-invalid resource does not synthesize.
func TestValidationCatchesErrors(t *testing.T) {
	app := newApp(t.TempDir())
	stack := awscdk.NewStack(app, jsii.String("Invalid"), nil)
	awsdlm.NewCfnLifecyclePolicy(stack, jsii.String("Bad"), &awsdlm.CfnLifecyclePolicyProps{
		Description: jsii.String("not: allowed!"), // ^[0-9A-Za-z _-]+$
		State:       jsii.String("ENABLED"),
	})
	var asm cxapi.CloudAssembly
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%v", r)
			}
		}()
		asm = app.Synth(synthOptions)
		return nil
	}()
	if err != nil {
		return // synthesis refused the template
	}
	raw, _ := os.ReadFile(filepath.Join(*asm.Directory(), "validation-report.json"))
	if !strings.Contains(string(raw), "does not match pattern") {
		t.Errorf("an invalid DLM description synthesized without a validation finding; report: %s", raw)
	}
}

// TestOffline: synthesis needed no context lookup (so no AWS credentials
// and no cdk.context.json) and the stack is environment-agnostic.
func TestOffline(t *testing.T) {
	// (cxapi's Manifest() does not cross jsii in Go: read the file.)
	raw, err := os.ReadFile(filepath.Join(*synth.assembly.Directory(), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Missing []struct{ Key, Provider string } `json:"missing"`
	}
	if err := json.Unmarshal(raw, &manifest); err != nil {
		t.Fatal(err)
	}
	for _, mc := range manifest.Missing {
		t.Errorf("missing context %s (%s): synthesis would need AWS credentials", mc.Key, mc.Provider)
	}
	if _, err := os.Stat("cdk.context.json"); err == nil {
		t.Error("infra/cdk.context.json exists: the stack must not depend on cached lookups")
	}
	if !strings.HasPrefix(*synth.conveyor.Stack.Account(), "${Token[") || !strings.HasPrefix(*synth.conveyor.Stack.Region(), "${Token[") {
		t.Errorf("stack is bound to account %s region %s; it must be environment-agnostic", *synth.conveyor.Stack.Account(), *synth.conveyor.Stack.Region())
	}
}

// TestCfnLint runs cfn-lint on the synthesized template.
func TestCfnLint(t *testing.T) {
	bin, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Skip("cfn-lint is not on PATH (pip install cfn-lint); skipping the lint of the template")
	}
	path := filepath.Join(t.TempDir(), "Conveyor.template.json")
	raw, err := json.MarshalIndent(synth.json, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	// W3005 (DependsOn also implied by a GetAtt) is how CDK always writes a
	// function's dependency on its role policy; nothing else is ignored.
	out, err := exec.Command(bin, "--ignore-checks", "W3005", "--", path).CombinedOutput()
	if err != nil {
		t.Errorf("cfn-lint: %v\n%s", err, out)
	}
}
