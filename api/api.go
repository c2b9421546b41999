package api

import (
	_ "embed"
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"
)

var (
	//go:embed router.openapi.yaml
	routerYAML []byte
	//go:embed provisioner.openapi.yaml
	provisionerYAML []byte
)

// Router returns the router's description in YAML, as kept in the repository.
func Router() []byte { return routerYAML }

// Provisioner returns the provisioning API's description in YAML, as kept in the repository.
func Provisioner() []byte { return provisionerYAML }

// RouterJSON returns the router's description as JSON, the body of its GET /openapi.json.
func RouterJSON() ([]byte, error) { return toJSON("router.openapi.yaml", routerYAML) }

// ProvisionerJSON returns the provisioning API's description as JSON, the body of its GET
// /openapi.json.
func ProvisionerJSON() ([]byte, error) { return toJSON("provisioner.openapi.yaml", provisionerYAML) }

// toJSON converts a YAML document to JSON. Mapping keys must be strings (status codes are quoted
// in the files), as JSON requires.
func toJSON(name string, doc []byte) ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		return nil, fmt.Errorf("api: %s: %w", name, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("api: %s: to JSON: %w", name, err)
	}
	return b, nil
}
