// Package deploy holds the tests of the deployment files: the Kubernetes
// manifests in kubernetes/ and the repository's Dockerfile. It is a module of
// its own so that the Kubernetes API types it decodes the manifests into
// never become dependencies of the daemon's module.
package deploy
