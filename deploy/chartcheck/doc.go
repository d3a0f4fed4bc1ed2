// Package chartcheck checks livefuse's deployment files offline, where no
// container engine and no Kubernetes cluster run: the Helm chart under
// deploy/helm/livefuse (helm lint and helm template with the pinned helm,
// every rendered manifest decoded strictly into the Kubernetes API types,
// the ServiceMonitor into the Prometheus Operator's, the KEDA ScaledObject
// against its documented fields), the compose file (loaded by
// compose-spec/compose-go), the Dockerfile (parsed by BuildKit's parser),
// and the config templates that livefuse-render-config fills.
//
// It is a module of its own so that the server's module does not pull the
// Kubernetes libraries. Run it with `make chart-check`.
package chartcheck
