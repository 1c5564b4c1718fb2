// Package k8s holds Conveyor's Kubernetes manifests for workers (a
// Deployment of `conveyor worker serve` with a volume per pod, its
// ConfigMap, the shape of its Secrets, a KEDA ScaledObject on the
// JetStream backlog, a kustomization) and the test that decodes each one
// strictly into the Kubernetes API types and checks what operators rely on.
// It has no code the binary uses.
package k8s
