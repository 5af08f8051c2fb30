package jetbridge

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemasDir holds the protocol's JSON Schemas, which decide wherever the
// spec's prose and this library could disagree.
const schemasDir = "../../protocol/schemas"

var schemas struct {
	once     sync.Once
	compiled map[string]*jsonschema.Schema
	err      error
}

// schema compiles protocol/schemas/<name>.schema.json, with base64 content
// asserted as the library does.
func schema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	schemas.once.Do(func() {
		c := jsonschema.NewCompiler()
		c.AssertContent()
		files, err := filepath.Glob(filepath.Join(schemasDir, "*.schema.json"))
		if err != nil || len(files) == 0 {
			schemas.err = err
			return
		}
		ids := map[string]string{}
		for _, f := range files {
			doc, err := readJSON(f)
			if err != nil {
				schemas.err = err
				return
			}
			id := doc.(map[string]any)["$id"].(string)
			if err := c.AddResource(id, doc); err != nil {
				schemas.err = err
				return
			}
			ids[filepath.Base(f)] = id
		}
		schemas.compiled = map[string]*jsonschema.Schema{}
		for file, id := range ids {
			sch, err := c.Compile(id)
			if err != nil {
				schemas.err = err
				return
			}
			schemas.compiled[file[:len(file)-len(".schema.json")]] = sch
		}
	})
	if schemas.err != nil {
		t.Fatalf("compiling schemas: %v", schemas.err)
	}
	sch, ok := schemas.compiled[name]
	if !ok {
		t.Fatalf("no schema %s", name)
	}
	return sch
}

func readJSON(path string) (any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(raw))
}

// schemaValid reports whether data is valid against the named schema.
func schemaValid(t *testing.T, name string, data []byte) error {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return schema(t, name).Validate(doc)
}

// validate fails the test when a message the library produced does not
// satisfy its schema.
func validate(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := schemaValid(t, name, data); err != nil {
		t.Errorf("%s does not satisfy %s.schema.json: %v", data, name, err)
	}
}
