package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kinds maps apiVersion/kind to the Go type a document decodes into. A kind
// missing here is an error, not a skip: add it when the examples grow.
var kinds = map[string]func() any{
	"v1/Pod":              func() any { return new(corev1.Pod) },
	"v1/ConfigMap":        func() any { return new(corev1.ConfigMap) },
	"v1/Service":          func() any { return new(corev1.Service) },
	"v1/ServiceAccount":   func() any { return new(corev1.ServiceAccount) },
	"apps/v1/Deployment":  func() any { return new(appsv1.Deployment) },
	"apps/v1/StatefulSet": func() any { return new(appsv1.StatefulSet) },
	"apps/v1/DaemonSet":   func() any { return new(appsv1.DaemonSet) },
	"batch/v1/Job":        func() any { return new(batchv1.Job) },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return new(rbacv1.ClusterRole) },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return new(rbacv1.ClusterRoleBinding) },
	"rbac.authorization.k8s.io/v1/Role":               func() any { return new(rbacv1.Role) },
	"rbac.authorization.k8s.io/v1/RoleBinding":        func() any { return new(rbacv1.RoleBinding) },
}

// object is one decoded document.
type object struct {
	where string // file#index kind/name, for messages
	kind  string
	name  string
	obj   any
}

// splitDocuments returns the non-empty YAML documents of a stream.
// sigs.k8s.io/yaml decodes only the first document of a stream, silently, so
// every document is split off first.
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if isEmptyDocument(doc) {
			continue
		}
		docs = append(docs, doc)
	}
}

func isEmptyDocument(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return false
		}
	}
	return true
}

// decodeStrict decodes one YAML document into v, rejecting duplicate keys,
// unknown fields and wrong types.
func decodeStrict(doc []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the document")
	}
	return nil
}

// decodeFile decodes every document of a manifest file into its typed object.
func decodeFile(path string) ([]object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no document", path)
	}
	var objs []object
	for i, doc := range docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s document %d: %w", path, i+1, err)
		}
		newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
		if !ok {
			return nil, fmt.Errorf("%s document %d: no type for %s %q: add it to kinds", path, i+1, tm.APIVersion, tm.Kind)
		}
		obj := newObj()
		if err := decodeStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s document %d (%s): %w", path, i+1, tm.Kind, err)
		}
		name := obj.(metav1.Object).GetName()
		if name == "" {
			return nil, fmt.Errorf("%s document %d (%s): metadata.name is empty", path, i+1, tm.Kind)
		}
		objs = append(objs, object{
			where: fmt.Sprintf("%s#%d %s/%s", filepath.ToSlash(path), i+1, tm.Kind, name),
			kind:  tm.Kind, name: name, obj: obj,
		})
	}
	return objs, nil
}

// kustomization is the part of kustomization.yaml this test understands.
// Decoding is strict, so a kustomization that starts using patches or
// other transformers fails here until the test learns them.
type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name     string   `json:"name"`
		Files    []string `json:"files"`
		Envs     []string `json:"envs"`
		Literals []string `json:"literals"`
	} `json:"configMapGenerator"`
}

// bundle is what one kustomization (or a set of plain files) produces.
type bundle struct {
	objects    []object
	configMaps map[string]map[string]string // name -> key -> value
	files      []string                     // every file read, for coverage checks
	// hostPaths maps a node path to the repository directory the kind
	// config mounts there (static pods read their files from the node).
	hostPaths map[string]string
}

func newBundle() *bundle {
	return &bundle{configMaps: map[string]map[string]string{}}
}

func (b *bundle) addObjects(objs []object) error {
	for _, o := range objs {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok {
			if err := b.addConfigMap(cm.Name, cm.Data); err != nil {
				return fmt.Errorf("%s: %w", o.where, err)
			}
		}
		for _, prev := range b.objects {
			if prev.kind == o.kind && prev.name == o.name {
				return fmt.Errorf("%s and %s: two %s named %q", prev.where, o.where, o.kind, o.name)
			}
		}
		b.objects = append(b.objects, o)
	}
	return nil
}

func (b *bundle) addConfigMap(name string, data map[string]string) error {
	if _, dup := b.configMaps[name]; dup {
		return fmt.Errorf("ConfigMap %q defined twice", name)
	}
	b.configMaps[name] = data
	return nil
}

// loadFiles decodes plain manifest files into one bundle.
func loadFiles(paths ...string) (*bundle, error) {
	b := newBundle()
	for _, p := range paths {
		objs, err := decodeFile(p)
		if err != nil {
			return nil, err
		}
		b.files = append(b.files, p)
		if err := b.addObjects(objs); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// loadKustomization reads dir/kustomization.yaml the way `kubectl kustomize`
// would for the features it uses (resources: files and directories;
// configMapGenerator: files, envs, literals), without kubectl.
func loadKustomization(dir string) (*bundle, error) {
	b := newBundle()
	if err := b.loadKustomization(dir); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *bundle) loadKustomization(dir string) error {
	path := filepath.Join(dir, "kustomization.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	b.files = append(b.files, path)
	var k kustomization
	if err := decodeStrict(data, &k); err != nil {
		return fmt.Errorf("%s: %w (the test reads only apiVersion, kind, resources and configMapGenerator)", path, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return fmt.Errorf("%s: apiVersion/kind %s/%s, want kustomize.config.k8s.io/v1beta1/Kustomization", path, k.APIVersion, k.Kind)
	}
	for _, r := range k.Resources {
		rp := filepath.Join(dir, r)
		st, err := os.Stat(rp)
		if err != nil {
			return fmt.Errorf("%s: resource %q: %w", path, r, err)
		}
		if st.IsDir() {
			if err := b.loadKustomization(rp); err != nil {
				return err
			}
			continue
		}
		objs, err := decodeFile(rp)
		if err != nil {
			return err
		}
		b.files = append(b.files, rp)
		if err := b.addObjects(objs); err != nil {
			return err
		}
	}
	for _, g := range k.ConfigMapGenerator {
		data := map[string]string{}
		set := func(key, value, from string) error {
			if _, dup := data[key]; dup {
				return fmt.Errorf("%s: configMapGenerator %q: key %q twice (%s)", path, g.Name, key, from)
			}
			data[key] = value
			return nil
		}
		for _, f := range g.Files {
			key, file, ok := strings.Cut(f, "=")
			if !ok {
				key, file = filepath.Base(f), f
			}
			content, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				return fmt.Errorf("%s: configMapGenerator %q: %w", path, g.Name, err)
			}
			b.files = append(b.files, filepath.Join(dir, file))
			if err := set(key, string(content), file); err != nil {
				return err
			}
		}
		for _, f := range g.Envs {
			env, err := readEnvFile(filepath.Join(dir, f))
			if err != nil {
				return fmt.Errorf("%s: configMapGenerator %q: %w", path, g.Name, err)
			}
			b.files = append(b.files, filepath.Join(dir, f))
			for _, kv := range env {
				if err := set(kv[0], kv[1], f); err != nil {
					return err
				}
			}
		}
		for _, l := range g.Literals {
			key, value, ok := strings.Cut(l, "=")
			if !ok {
				return fmt.Errorf("%s: configMapGenerator %q: literal %q is not KEY=VALUE", path, g.Name, l)
			}
			if err := set(key, value, "literal"); err != nil {
				return err
			}
		}
		if err := b.addConfigMap(g.Name, data); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

// readEnvFile reads KEY=VALUE lines as kustomize's envs do: blank lines and
// lines starting with # are skipped, the value is the rest of the line.
func readEnvFile(path string) ([][2]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE", path, i+1)
		}
		out = append(out, [2]string{key, value})
	}
	return out, nil
}

// pod is one pod spec found in a bundle, with where it came from.
type pod struct {
	where string
	meta  metav1.ObjectMeta
	spec  corev1.PodSpec
}

func (b *bundle) pods() []pod {
	var out []pod
	for _, o := range b.objects {
		switch v := o.obj.(type) {
		case *corev1.Pod:
			out = append(out, pod{where: o.where, meta: v.ObjectMeta, spec: v.Spec})
		case *appsv1.Deployment:
			out = append(out, pod{where: o.where, meta: v.Spec.Template.ObjectMeta, spec: v.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			out = append(out, pod{where: o.where, meta: v.Spec.Template.ObjectMeta, spec: v.Spec.Template.Spec})
		case *appsv1.DaemonSet:
			out = append(out, pod{where: o.where, meta: v.Spec.Template.ObjectMeta, spec: v.Spec.Template.Spec})
		case *batchv1.Job:
			out = append(out, pod{where: o.where, meta: v.Spec.Template.ObjectMeta, spec: v.Spec.Template.Spec})
		}
	}
	return out
}
