{{/* Common labels. */}}
{{- define "arena.labels" -}}
app.kubernetes.io/name: arena-flywheel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* A value of a map as a string, or the default when the key is absent (unlike `default`, keeps 0 and false).
     Callers convert: int64, float64, eq "true". */}}
{{- define "arena.get" -}}
{{- $m := index . 0 -}}{{- $k := index . 1 -}}
{{- if hasKey $m $k -}}{{- get $m $k | toString -}}{{- else -}}{{- index . 2 | toString -}}{{- end -}}
{{- end -}}

{{/* The served models of flywheel.config: target, competitors, judge with source.kind "served", unique by name
     (arena_ops.serving.app.served_models). A JSON list. */}}
{{- define "arena.servedModels" -}}
{{- $models := .Values.flywheel.config.models -}}
{{- $all := list $models.target -}}
{{- range ($models.competitors | default list) }}{{ $all = append $all . }}{{ end -}}
{{- $all = append $all $models.judge -}}
{{- $seen := dict -}}
{{- $out := list -}}
{{- range $all -}}
{{- if and (eq .source.kind "served") (not (hasKey $seen .name)) -}}
{{- $_ := set $seen .name true -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* serveConfigV2 from flywheel.config — the same applications arena_ops.serving.app.serve_config declares
     (tests/deploy/test_helm.py checks that they agree): one app per served model under /m/<slug> (serving.backend
     "vllm": arena_ops.serving.engine with the weights as the deployment's user_config; "ray-serve-llm":
     ray.serve.llm), and the router at serving.route_prefix. Defaults mirror arena_ops.config.EngineConfig. */}}
{{- define "arena.serveConfig" -}}
{{- $serving := .Values.flywheel.config.serving | default dict -}}
{{- $storage := .Values.flywheel.config.storage | default dict -}}
{{- $backend := include "arena.get" (list $serving "backend" "vllm") -}}
{{- $port := include "arena.get" (list $serving "port" 8000) -}}
{{- $apps := list -}}
{{- $upstreams := dict -}}
{{- range (include "arena.servedModels" . | fromJsonArray) -}}
{{- $e := .source.engine | default dict -}}
{{- $slug := regexReplaceAll "[^A-Za-z0-9._-]+" .name "-" | trimAll "-" -}}
{{- $device := include "arena.get" (list $e "device" "cpu") -}}
{{- $min := include "arena.get" (list $e "min_replicas" 1) | int64 -}}
{{- $max := include "arena.get" (list $e "max_replicas" 1) | int64 -}}
{{- if eq $backend "vllm" -}}
{{- $actor := dict "num_cpus" (include "arena.get" (list $e "cpus_per_replica" 1.0) | float64) -}}
{{- if eq $device "gpu" }}{{ $_ := set $actor "num_gpus" (include "arena.get" (list $e "tensor_parallel_size" 1) | int64) }}{{ end -}}
{{- if $e.ray_resources }}{{ $_ := set $actor "resources" $e.ray_resources }}{{ end -}}
{{- $weights := dict "path" .source.path -}}
{{- if .source.tiny }}{{ $_ := set $weights "tiny" .source.tiny }}{{ end -}}
{{- $deployment := dict "name" "VLLMServer" "ray_actor_options" $actor "user_config" $weights
      "autoscaling_config" (dict "min_replicas" $min "max_replicas" $max "initial_replicas" (max $min 1)) -}}
{{- if $storage.s3 }}{{ $_ := set $weights "s3" $storage.s3 }}{{ end -}}
{{- $args := dict "model_id" .name "engine" $e -}}
{{- $apps = append $apps (dict "name" (printf "arena-model-%s" $slug) "route_prefix" (printf "/m/%s" $slug)
      "import_path" "arena_ops.serving.engine:build_engine_app" "args" $args "deployments" (list $deployment)) -}}
{{- $_ := set $upstreams .name (dict "app" (printf "arena-model-%s" $slug)) -}}
{{- else -}}
{{- $gib := include "arena.get" (list $e "kv_cache_gib" 1.0) | float64 -}}
{{- $kw := dict
      "dtype" (include "arena.get" (list $e "dtype" "auto"))
      "max_model_len" (include "arena.get" (list $e "max_model_len" 2048) | int64)
      "tensor_parallel_size" (include "arena.get" (list $e "tensor_parallel_size" 1) | int64)
      "enforce_eager" (include "arena.get" (list $e "enforce_eager" true) | eq "true")
      "kv_cache_memory_bytes" (mulf $gib 1073741824 | int64) -}}
{{- $path := .source.path -}}
{{- $source := trimPrefix "file://" $path -}}
{{- if hasPrefix "s3://" $path }}{{ $source = dict "bucket_uri" $path }}{{ end -}}
{{- $llm := dict
      "model_loading_config" (dict "model_id" .name "model_source" $source)
      "engine_kwargs" $kw
      "deployment_config" (dict "autoscaling_config" (dict "min_replicas" $min "max_replicas" $max "initial_replicas" (max $min 1))) -}}
{{- if eq $device "cpu" -}}
{{- $_ := set $kw "distributed_executor_backend" "mp" -}}
{{- $_ := set $llm "accelerator_config" (dict "kind" "cpu") -}}
{{- $cpus := include "arena.get" (list $e "cpus_per_replica" 1.0) | float64 -}}
{{- $_ := set $llm "placement_group_config" (dict "bundles" (list (merge (dict "CPU" $cpus) ($e.ray_resources | default dict)))) -}}
{{- $space := addf $gib 0.5 | floor | int64 | max 1 -}}
{{- $_ := set $llm "runtime_env" (dict "env_vars" (dict "VLLM_CPU_KVCACHE_SPACE" (toString $space))) -}}
{{- end -}}
{{- $apps = append $apps (dict "name" (printf "arena-model-%s" $slug) "route_prefix" (printf "/m/%s" $slug)
      "import_path" "ray.serve.llm:build_openai_app" "args" (dict "llm_configs" (list $llm))) -}}
{{- $_ := set $upstreams .name (printf "http://127.0.0.1:%v/m/%s" $port $slug) -}}
{{- end -}}
{{- end -}}
{{- $apps = append $apps (dict "name" "arena-router" "route_prefix" (include "arena.get" (list $serving "route_prefix" "/"))
      "import_path" "arena_ops.serving.router:build_router" "args" (dict "upstreams" $upstreams)) -}}
{{- $proxy := include "arena.get" (list $serving "proxy_location" "EveryNode") -}}
{{- toJson (dict "proxy_location" $proxy "http_options" (dict "host" "0.0.0.0" "port" ($port | int64)) "applications" $apps) -}}
{{- end -}}

{{/* Env of every Ray container: the flywheel config, S3 credentials, optional model env Secret. */}}
{{- define "arena.rayEnv" -}}
env:
  - name: ARENA_CONFIG
    value: {{ printf "%s/flywheel.yaml" .Values.flywheel.mountPath | quote }}
  - name: AWS_ACCESS_KEY_ID
    valueFrom: {secretKeyRef: {name: {{ .Values.secrets.s3 | quote }}, key: AWS_ACCESS_KEY_ID}}
  - name: AWS_SECRET_ACCESS_KEY
    valueFrom: {secretKeyRef: {name: {{ .Values.secrets.s3 | quote }}, key: AWS_SECRET_ACCESS_KEY}}
{{- with .Values.flywheel.config.storage }}{{ with .s3 }}{{ with .endpoint_url }}
  - name: AWS_ENDPOINT_URL_S3
    value: {{ . | quote }}
{{- end }}{{ end }}{{ end }}
{{- if .Values.secrets.modelEnv }}
envFrom:
  - secretRef: {name: {{ .Values.secrets.modelEnv | quote }}}
{{- end }}
{{- end -}}

{{/* A Ray pod template: image, ports, env, config volume, resources, scheduling. Args: (list $ root role spec). */}}
{{- define "arena.rayPod" -}}
{{- $root := index . 0 -}}{{- $role := index . 1 -}}{{- $spec := index . 2 -}}{{- $shm := index . 3 -}}
metadata:
  labels:
    {{- include "arena.labels" $root | nindent 4 }}
spec:
  {{- with $root.Values.images.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . | quote }}
    {{- end }}
  {{- end }}
  containers:
    - name: {{ printf "ray-%s" $role }}
      image: {{ printf "%s:%s" $root.Values.images.ray.repository $root.Values.images.ray.tag | quote }}
      imagePullPolicy: {{ $root.Values.images.pullPolicy }}
      {{- if eq $role "head" }}
      ports:
        - {containerPort: 6379, name: gcs-server}
        - {containerPort: 8265, name: dashboard}
        - {containerPort: 10001, name: client}
        - {containerPort: 8000, name: serve}
      {{- end }}
      {{- include "arena.rayEnv" $root | nindent 6 }}
      resources:
        {{- toYaml $spec.resources | nindent 8 }}
      volumeMounts:
        - {name: arena-config, mountPath: {{ $root.Values.flywheel.mountPath | quote }}, readOnly: true}
        {{- if $shm }}
        - {name: dshm, mountPath: /dev/shm}
        {{- end }}
  volumes:
    - name: arena-config
      configMap: {name: {{ $root.Values.flywheel.configMapName | quote }}}
    {{- if $shm }}
    - name: dshm
      emptyDir: {medium: Memory, sizeLimit: {{ $shm | quote }}}
    {{- end }}
  {{- with $spec.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* headGroupSpec + workerGroupSpecs of a RayCluster spec. Args: (list $ values-section shmSize). */}}
{{- define "arena.rayClusterSpec" -}}
{{- $root := index . 0 -}}{{- $c := index . 1 -}}{{- $shm := index . 2 -}}
rayVersion: {{ $c.rayVersion | quote }}
enableInTreeAutoscaling: true
headGroupSpec:
  rayStartParams:
    dashboard-host: "0.0.0.0"
    num-gpus: "0"
  template:
    {{- include "arena.rayPod" (list $root "head" $c.head "") | nindent 4 }}
workerGroupSpecs:
  - groupName: {{ $c.workers.groupName | quote }}
    replicas: {{ $c.workers.replicas }}
    minReplicas: {{ $c.workers.minReplicas }}
    maxReplicas: {{ $c.workers.maxReplicas }}
    rayStartParams: {}
    template:
      {{- include "arena.rayPod" (list $root "worker" $c.workers $shm) | nindent 6 }}
{{- end -}}

{{/* The flywheel config as mounted: flywheel.config, plus — when the chart runs the RayService — serving.rayservice
     (so `serve up` patches it instead of deploying through Ray) and serving.host (its Serve Service). */}}
{{- define "arena.flywheelConfig" -}}
{{- $config := deepCopy .Values.flywheel.config -}}
{{- if .Values.rayService.enabled -}}
{{- $serving := get $config "serving" | default dict -}}
{{- $_ := set $serving "rayservice" (dict "name" .Values.rayService.name "namespace" .Release.Namespace) -}}
{{- if not (hasKey $serving "host") -}}
{{- $_ := set $serving "host" (printf "%s-serve-svc" .Values.rayService.name) -}}
{{- end -}}
{{- $_ := set $config "serving" $serving -}}
{{- end -}}
{{- /* The Airflow image has no torch: it embeds (decontamination, test sets) as Ray tasks, through Ray Client on
     the training cluster unless the values name another cluster. */ -}}
{{- if .Values.rayTraining.enabled -}}
{{- $serving := get $config "serving" | default dict -}}
{{- if not (hasKey $serving "ray_address") -}}
{{- $_ := set $serving "ray_address" (printf "ray://%s-head-svc:10001" .Values.rayTraining.name) -}}
{{- end -}}
{{- $_ := set $config "serving" $serving -}}
{{- end -}}
{{- toJson $config -}}
{{- end -}}
