/*
 * A fake libnvidia-ml.so.1 for testing llmfleet.workstation without a GPU.
 *
 * Compiled against NVIDIA's own nvml.h, so every exported function has NVML's exact signature and the
 * real pynvml can load it with CDLL("libnvidia-ml.so.1"). GPUs are described by a JSON scenario file
 * ($FAKE_NVML_SCENARIO, else /etc/fake-nvml/scenario.json; schema in README.md), re-read whenever the
 * file changes so a test can change a GPU while a module is polling it.
 *
 * Edge behaviour follows real NVML: calls before nvmlInit (or after the last nvmlShutdown) return
 * UNINITIALIZED; a link index past the GPU's last link returns INVALID_ARGUMENT; NVLink calls on a GPU
 * without NVLink and readings a GPU does not expose return NOT_SUPPORTED; NVML_FI_DEV_MEMORY_TEMP
 * reports NOT_SUPPORTED per field while the call itself succeeds.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#define _POSIX_C_SOURCE 200809L
#define NVML_NO_UNVERSIONED_FUNC_DEFS
#include <nvml.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#define EXPORT __attribute__((visibility("default")))
#define MAX_GPUS 64

/* ---------------------------------------------------------------- a small JSON reader */

typedef enum { J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } json_type;

typedef struct json {
    json_type type;
    double number;
    int boolean;
    char *string;         /* J_STRING value */
    char *key;            /* member name when inside an object */
    struct json *child;   /* first element or member */
    struct json *next;    /* next sibling */
} json;

typedef struct {
    const char *text;
    size_t pos;
    const char *error;
} json_parser;

static void json_free(json *node) {
    while (node) {
        json *next = node->next;
        json_free(node->child);
        free(node->string);
        free(node->key);
        free(node);
        node = next;
    }
}

static void skip_space(json_parser *p) {
    while (p->text[p->pos] == ' ' || p->text[p->pos] == '\n' || p->text[p->pos] == '\r' || p->text[p->pos] == '\t')
        p->pos++;
}

static char *parse_string_raw(json_parser *p) {
    size_t cap = 32, len = 0;
    char *out;
    if (p->text[p->pos] != '"') { p->error = "expected a string"; return NULL; }
    p->pos++;
    out = malloc(cap);
    if (!out) { p->error = "out of memory"; return NULL; }
    for (;;) {
        char c = p->text[p->pos++];
        if (c == '\0') { p->error = "unterminated string"; free(out); return NULL; }
        if (c == '"') break;
        if (c == '\\') {
            char e = p->text[p->pos++];
            switch (e) {
            case '"': case '\\': case '/': c = e; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            default: p->error = "unsupported escape in string"; free(out); return NULL;
            }
        }
        if (len + 2 > cap) {
            char *grown = realloc(out, cap *= 2);
            if (!grown) { free(out); p->error = "out of memory"; return NULL; }
            out = grown;
        }
        out[len++] = c;
    }
    out[len] = '\0';
    return out;
}

static json *parse_value(json_parser *p, int depth);

static json *new_node(json_parser *p, json_type type) {
    json *node = calloc(1, sizeof(*node));
    if (!node) p->error = "out of memory";
    else node->type = type;
    return node;
}

static json *parse_container(json_parser *p, int depth, json_type type) {
    char close = type == J_OBJECT ? '}' : ']';
    json *node = new_node(p, type), **tail;
    if (!node) return NULL;
    tail = &node->child;
    p->pos++;
    skip_space(p);
    if (p->text[p->pos] == close) { p->pos++; return node; }
    for (;;) {
        char *key = NULL;
        json *item;
        skip_space(p);
        if (type == J_OBJECT) {
            key = parse_string_raw(p);
            if (!key) goto fail;
            skip_space(p);
            if (p->text[p->pos] != ':') { free(key); p->error = "expected ':'"; goto fail; }
            p->pos++;
        }
        item = parse_value(p, depth + 1);
        if (!item) { free(key); goto fail; }
        item->key = key;
        *tail = item;
        tail = &item->next;
        skip_space(p);
        if (p->text[p->pos] == ',') { p->pos++; continue; }
        if (p->text[p->pos] == close) { p->pos++; return node; }
        p->error = type == J_OBJECT ? "expected ',' or '}'" : "expected ',' or ']'";
        goto fail;
    }
fail:
    json_free(node);
    return NULL;
}

static json *parse_value(json_parser *p, int depth) {
    json *node;
    const char *at;
    if (depth > 32) { p->error = "nested too deeply"; return NULL; }
    skip_space(p);
    at = p->text + p->pos;
    switch (*at) {
    case '{': return parse_container(p, depth, J_OBJECT);
    case '[': return parse_container(p, depth, J_ARRAY);
    case '"':
        node = new_node(p, J_STRING);
        if (node && !(node->string = parse_string_raw(p))) { json_free(node); return NULL; }
        return node;
    case 't': case 'f': case 'n':
        if (!strncmp(at, "true", 4) || !strncmp(at, "false", 5) || !strncmp(at, "null", 4)) {
            node = new_node(p, *at == 'n' ? J_NULL : J_BOOL);
            if (node) node->boolean = (*at == 't');
            p->pos += (*at == 'f') ? 5 : 4;
            return node;
        }
        break;
    default:
        if (*at == '-' || (*at >= '0' && *at <= '9')) {
            char *end;
            errno = 0;
            double value = strtod(at, &end);
            if (end == at || errno) break;
            node = new_node(p, J_NUMBER);
            if (node) node->number = value;
            p->pos += (size_t)(end - at);
            return node;
        }
    }
    p->error = "unexpected character";
    return NULL;
}

static json *get(const json *object, const char *key) {
    const json *item;
    if (!object || object->type != J_OBJECT) return NULL;
    for (item = object->child; item; item = item->next)
        if (!strcmp(item->key, key)) return (json *)item;
    return NULL;
}

static json *at_index(const json *array, unsigned int index) {
    json *item;
    if (!array || array->type != J_ARRAY) return NULL;
    for (item = array->child; item && index; item = item->next) index--;
    return item;
}

static unsigned int count(const json *array) {
    unsigned int n = 0;
    json *item;
    if (!array || array->type != J_ARRAY) return 0;
    for (item = array->child; item; item = item->next) n++;
    return n;
}

static int is_number(const json *node) { return node && node->type == J_NUMBER; }
static int is_string(const json *node) { return node && node->type == J_STRING; }

/* ---------------------------------------------------------------- scenario state */

typedef struct { unsigned int index; } fake_device;

static fake_device devices[MAX_GPUS];
static json *scenario;
static char scenario_path[4096];
static struct timespec scenario_mtime;
static off_t scenario_size;
static unsigned int init_count;

static const char *scenario_file(void) {
    const char *path = getenv("FAKE_NVML_SCENARIO");
    return (path && *path) ? path : "/etc/fake-nvml/scenario.json";
}

/* Load the scenario; on failure print one line naming the file and the problem, keep the old one. */
static int load_scenario(const char *path) {
    FILE *file = fopen(path, "rb");
    struct stat info;
    char *text;
    json_parser parser = {0};
    json *parsed;
    if (!file) {
        fprintf(stderr, "fake-nvml: cannot open scenario %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(file), &info) != 0 || !(text = malloc((size_t)info.st_size + 1))) {
        fprintf(stderr, "fake-nvml: cannot read scenario %s\n", path);
        fclose(file);
        return -1;
    }
    text[fread(text, 1, (size_t)info.st_size, file)] = '\0';
    fclose(file);
    parser.text = text;
    parsed = parse_value(&parser, 0);
    if (parsed) {
        skip_space(&parser);
        if (text[parser.pos] != '\0') { parser.error = "trailing characters"; json_free(parsed); parsed = NULL; }
    }
    if (!parsed || parsed->type != J_OBJECT) {
        fprintf(stderr, "fake-nvml: invalid scenario %s at byte %zu: %s\n", path, parser.pos,
                parser.error ? parser.error : "top level must be an object");
        json_free(parsed);
        free(text);
        return -1;
    }
    free(text);
    json_free(scenario);
    scenario = parsed;
    snprintf(scenario_path, sizeof(scenario_path), "%s", path);
    scenario_mtime = info.st_mtim;
    scenario_size = info.st_size;
    return 0;
}

static void reload_if_changed(void) {
    struct stat info;
    if (stat(scenario_path, &info) != 0) return;
    if (info.st_size != scenario_size || info.st_mtim.tv_sec != scenario_mtime.tv_sec ||
        info.st_mtim.tv_nsec != scenario_mtime.tv_nsec)
        load_scenario(scenario_path);
}

static json *gpus(void) { return get(scenario, "gpus"); }
static unsigned int gpu_count(void) { unsigned int n = count(gpus()); return n > MAX_GPUS ? MAX_GPUS : n; }

/* Resolve a handle to its GPU's scenario object; NULL for handles we never gave out. */
static json *gpu_of(nvmlDevice_t device) {
    fake_device *fake = (fake_device *)device;
    if (fake < devices || fake >= devices + MAX_GPUS || fake->index >= gpu_count()) return NULL;
    return at_index(gpus(), fake->index);
}

#define REQUIRE_INIT()                         \
    do {                                       \
        if (!init_count) return NVML_ERROR_UNINITIALIZED; \
        reload_if_changed();                   \
    } while (0)

#define REQUIRE_GPU(gpu, device, out)                          \
    REQUIRE_INIT();                                            \
    json *gpu = gpu_of(device);                                \
    if (!gpu || !(out)) return NVML_ERROR_INVALID_ARGUMENT

/* A number at path gpu[section][key] (section may be NULL); NOT_SUPPORTED when absent or null. */
static nvmlReturn_t read_number(const json *gpu, const char *section, const char *key, double *value) {
    const json *node = section ? get(get(gpu, section), key) : get(gpu, key);
    if (!is_number(node)) return NVML_ERROR_NOT_SUPPORTED;
    *value = node->number;
    return NVML_SUCCESS;
}

static nvmlReturn_t read_uint(const json *gpu, const char *section, const char *key, unsigned int *out) {
    double value;
    nvmlReturn_t status = read_number(gpu, section, key, &value);
    if (status == NVML_SUCCESS) *out = (unsigned int)value;
    return status;
}

static nvmlReturn_t copy_string(const char *value, char *buffer, unsigned int length) {
    if (!buffer) return NVML_ERROR_INVALID_ARGUMENT;
    if (!value) return NVML_ERROR_NOT_SUPPORTED;
    if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buffer, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

static const char *string_at(const json *object, const char *key) {
    const json *node = get(object, key);
    return is_string(node) ? node->string : NULL;
}

/* ---------------------------------------------------------------- errors */

static const struct { const char *name; nvmlReturn_t code; const char *text; } error_table[] = {
    {"SUCCESS", NVML_SUCCESS, "Success"},
    {"UNINITIALIZED", NVML_ERROR_UNINITIALIZED, "Uninitialized"},
    {"INVALID_ARGUMENT", NVML_ERROR_INVALID_ARGUMENT, "Invalid Argument"},
    {"NOT_SUPPORTED", NVML_ERROR_NOT_SUPPORTED, "Not Supported"},
    {"NO_PERMISSION", NVML_ERROR_NO_PERMISSION, "Insufficient Permissions"},
    {"NOT_FOUND", NVML_ERROR_NOT_FOUND, "Not Found"},
    {"INSUFFICIENT_SIZE", NVML_ERROR_INSUFFICIENT_SIZE, "Insufficient Size"},
    {"DRIVER_NOT_LOADED", NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"},
    {"TIMEOUT", NVML_ERROR_TIMEOUT, "Timeout"},
    {"IRQ_ISSUE", NVML_ERROR_IRQ_ISSUE, "Interrupt request issue"},
    {"LIBRARY_NOT_FOUND", NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"},
    {"GPU_IS_LOST", NVML_ERROR_GPU_IS_LOST, "GPU is lost"},
    {"NO_DATA", NVML_ERROR_NO_DATA, "No data"},
    {"UNKNOWN", NVML_ERROR_UNKNOWN, "Unknown Error"},
};

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    size_t i;
    for (i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++)
        if (error_table[i].code == result) return error_table[i].text;
    return "Unknown Error";
}

/* ---------------------------------------------------------------- init and system */

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    const json *init_error;
    size_t i;
    (void)flags;
    if (!init_count) {
        if (load_scenario(scenario_file()) != 0) return NVML_ERROR_UNKNOWN;
        init_error = get(scenario, "init_error");
        if (is_string(init_error)) {
            for (i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++)
                if (!strcmp(error_table[i].name, init_error->string)) return error_table[i].code;
            return NVML_ERROR_UNKNOWN;
        }
        for (i = 0; i < MAX_GPUS; i++) devices[i].index = (unsigned int)i;
    }
    init_count++;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    init_count--;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    REQUIRE_INIT();
    return copy_string(string_at(scenario, "driver_version"), version, length);
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    REQUIRE_INIT();
    return copy_string(string_at(scenario, "nvml_version"), version, length);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
    const json *node;
    REQUIRE_INIT();
    if (!cudaDriverVersion) return NVML_ERROR_INVALID_ARGUMENT;
    node = get(scenario, "cuda_driver_version");
    if (!is_number(node)) return NVML_ERROR_NOT_SUPPORTED;
    *cudaDriverVersion = (int)node->number;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) {
    return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

/* ---------------------------------------------------------------- devices */

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    REQUIRE_INIT();
    if (!deviceCount) return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = gpu_count();
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    REQUIRE_INIT();
    if (!device || index >= gpu_count()) return NVML_ERROR_INVALID_ARGUMENT;
    *device = (nvmlDevice_t)&devices[index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    REQUIRE_GPU(gpu, device, index);
    (void)gpu;
    *index = ((fake_device *)device)->index;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    REQUIRE_GPU(gpu, device, name);
    return copy_string(string_at(gpu, "name"), name, length);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    REQUIRE_GPU(gpu, device, uuid);
    return copy_string(string_at(gpu, "uuid"), uuid, length);
}

EXPORT nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t device, nvmlBrandType_t *type) {
    unsigned int brand;
    nvmlReturn_t status;
    REQUIRE_GPU(gpu, device, type);
    status = read_uint(gpu, NULL, "brand", &brand);
    if (status == NVML_SUCCESS) *type = (nvmlBrandType_t)brand;
    return status;
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber) {
    REQUIRE_GPU(gpu, device, minorNumber);
    if (read_uint(gpu, NULL, "minor_number", minorNumber) != NVML_SUCCESS)
        *minorNumber = ((fake_device *)device)->index;
    return NVML_SUCCESS;
}

/* Fill an nvmlPciInfo_t from a bus id such as "00000000:01:00.0". */
static nvmlReturn_t fill_pci(const char *bus_id, unsigned int device_id, nvmlPciInfo_t *pci) {
    unsigned int domain = 0, bus = 0, slot = 0, function = 0;
    if (!bus_id || sscanf(bus_id, "%x:%x:%x.%x", &domain, &bus, &slot, &function) != 4)
        return NVML_ERROR_NOT_SUPPORTED;
    memset(pci, 0, sizeof(*pci));
    snprintf(pci->busId, sizeof(pci->busId), NVML_DEVICE_PCI_BUS_ID_FMT, domain, bus, slot);
    snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT, domain, bus, slot);
    pci->domain = domain;
    pci->bus = bus;
    pci->device = slot;
    pci->pciDeviceId = device_id;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    unsigned int device_id = 0;
    REQUIRE_GPU(gpu, device, pci);
    read_uint(gpu, NULL, "pci_device_id", &device_id);
    return fill_pci(string_at(gpu, "pci_bus_id"), device_id, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(device, pci);
}

static void memory_bytes(const json *gpu, unsigned long long *total, unsigned long long *used) {
    double total_mib = 0, used_mib = 0;
    read_number(gpu, NULL, "memory_total_mib", &total_mib);
    read_number(gpu, NULL, "memory_used_mib", &used_mib);
    *total = (unsigned long long)total_mib * 1024ULL * 1024ULL;
    *used = (unsigned long long)used_mib * 1024ULL * 1024ULL;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    REQUIRE_GPU(gpu, device, memory);
    memory_bytes(gpu, &memory->total, &memory->used);
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    REQUIRE_GPU(gpu, device, memory);
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    memory_bytes(gpu, &memory->total, &memory->used);
    memory->reserved = 0;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t *mode) {
    const json *node;
    REQUIRE_GPU(gpu, device, mode);
    node = get(gpu, "persistence_mode");
    if (!node || node->type != J_BOOL) return NVML_ERROR_NOT_SUPPORTED;
    *mode = node->boolean ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------------- PCIe and power */

#define UINT_READER(function, section, key)                              \
    EXPORT nvmlReturn_t function(nvmlDevice_t device, unsigned int *out) { \
        REQUIRE_GPU(gpu, device, out);                                    \
        return read_uint(gpu, section, key, out);                         \
    }

UINT_READER(nvmlDeviceGetCurrPcieLinkGeneration, "pcie", "current_gen")
UINT_READER(nvmlDeviceGetMaxPcieLinkGeneration, "pcie", "max_gen")
UINT_READER(nvmlDeviceGetGpuMaxPcieLinkGeneration, "pcie", "max_gen")
UINT_READER(nvmlDeviceGetCurrPcieLinkWidth, "pcie", "current_width")
UINT_READER(nvmlDeviceGetMaxPcieLinkWidth, "pcie", "max_width")
UINT_READER(nvmlDeviceGetPowerUsage, "power", "usage_mw")
UINT_READER(nvmlDeviceGetEnforcedPowerLimit, "power", "enforced_limit_mw")
UINT_READER(nvmlDeviceGetPowerManagementLimit, "power", "enforced_limit_mw")
UINT_READER(nvmlDeviceGetPowerManagementDefaultLimit, "power", "default_limit_mw")
UINT_READER(nvmlDeviceGetFanSpeed, NULL, "fan_speed_pct")

EXPORT nvmlReturn_t nvmlDeviceGetNumFans(nvmlDevice_t device, unsigned int *numFans) {
    REQUIRE_GPU(gpu, device, numFans);
    if (read_uint(gpu, NULL, "num_fans", numFans) != NVML_SUCCESS)
        *numFans = is_number(get(gpu, "fan_speed_pct")) ? 1 : 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device, unsigned int *minLimit,
                                                                  unsigned int *maxLimit) {
    nvmlReturn_t status;
    REQUIRE_GPU(gpu, device, minLimit);
    if (!maxLimit) return NVML_ERROR_INVALID_ARGUMENT;
    status = read_uint(gpu, "power", "min_limit_mw", minLimit);
    return status != NVML_SUCCESS ? status : read_uint(gpu, "power", "max_limit_mw", maxLimit);
}

/* ---------------------------------------------------------------- thermal */

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensorType,
                                             unsigned int *temp) {
    REQUIRE_GPU(gpu, device, temp);
    if (sensorType != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    return read_uint(gpu, "temperature", "gpu_c", temp);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device, nvmlTemperatureThresholds_t thresholdType,
                                                      unsigned int *temp) {
    static const char *keys[] = {"shutdown_c", "slowdown_c", "memory_max_c", "gpu_max_c"};
    REQUIRE_GPU(gpu, device, temp);
    if ((unsigned int)thresholdType >= sizeof(keys) / sizeof(keys[0])) return NVML_ERROR_NOT_SUPPORTED;
    return read_uint(gpu, "temperature", keys[thresholdType], temp);
}

EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount, nvmlFieldValue_t *values) {
    struct timeval now;
    int i;
    REQUIRE_GPU(gpu, device, values);
    if (valuesCount < 0) return NVML_ERROR_INVALID_ARGUMENT;
    gettimeofday(&now, NULL);
    for (i = 0; i < valuesCount; i++) {
        unsigned int reading;
        values[i].timestamp = (long long)now.tv_sec * 1000000LL + now.tv_usec;
        values[i].latencyUsec = 0;
        if (values[i].fieldId == NVML_FI_DEV_MEMORY_TEMP &&
            read_uint(gpu, "temperature", "memory_c", &reading) == NVML_SUCCESS) {
            values[i].valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            values[i].value.uiVal = reading;
            values[i].nvmlReturn = NVML_SUCCESS;
        } else {
            values[i].nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    return NVML_SUCCESS;
}

static const struct { const char *name; unsigned long long bit; } clock_event_reasons[] = {
    {"gpu_idle", nvmlClocksEventReasonGpuIdle},
    {"applications_clocks_setting", nvmlClocksEventReasonApplicationsClocksSetting},
    {"sw_power_cap", nvmlClocksEventReasonSwPowerCap},
    {"hw_slowdown", nvmlClocksThrottleReasonHwSlowdown},
    {"sync_boost", nvmlClocksEventReasonSyncBoost},
    {"sw_thermal_slowdown", nvmlClocksEventReasonSwThermalSlowdown},
    {"hw_thermal_slowdown", nvmlClocksThrottleReasonHwThermalSlowdown},
    {"hw_power_brake_slowdown", nvmlClocksThrottleReasonHwPowerBrakeSlowdown},
    {"display_clock_setting", nvmlClocksEventReasonDisplayClockSetting},
};

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *reasons) {
    const json *names, *name;
    size_t i;
    REQUIRE_GPU(gpu, device, reasons);
    *reasons = 0;
    names = get(gpu, "clocks_event_reasons");
    if (names && names->type != J_ARRAY) return NVML_ERROR_NOT_SUPPORTED;
    for (name = names ? names->child : NULL; name; name = name->next)
        for (i = 0; i < sizeof(clock_event_reasons) / sizeof(clock_event_reasons[0]); i++)
            if (is_string(name) && !strcmp(name->string, clock_event_reasons[i].name))
                *reasons |= clock_event_reasons[i].bit;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device, unsigned long long *reasons) {
    return nvmlDeviceGetCurrentClocksEventReasons(device, reasons);
}

/* ---------------------------------------------------------------- NVLink */

/*
 * The link object for (device, link), or an error: NOT_SUPPORTED on a GPU without NVLink,
 * INVALID_ARGUMENT past the GPU's last link, as real NVML answers.
 */
static nvmlReturn_t link_of(nvmlDevice_t device, unsigned int link, json **out) {
    json *gpu = gpu_of(device), *nvlink;
    if (!gpu) return NVML_ERROR_INVALID_ARGUMENT;
    nvlink = get(gpu, "nvlink");
    if (!nvlink || nvlink->type != J_OBJECT) return NVML_ERROR_NOT_SUPPORTED;
    if (link >= NVML_NVLINK_MAX_LINKS || link >= count(get(nvlink, "links"))) return NVML_ERROR_INVALID_ARGUMENT;
    *out = at_index(get(nvlink, "links"), link);
    return NVML_SUCCESS;
}

#define REQUIRE_LINK(entry, device, link, out)                \
    REQUIRE_INIT();                                           \
    json *entry = NULL;                                       \
    if (!(out)) return NVML_ERROR_INVALID_ARGUMENT;           \
    {                                                         \
        nvmlReturn_t link_status = link_of(device, link, &entry); \
        if (link_status != NVML_SUCCESS) return link_status;  \
    }

static int link_active(const json *entry) {
    const char *state = string_at(entry, "state");
    return state && !strcmp(state, "active");
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, nvmlEnableState_t *isActive) {
    REQUIRE_LINK(entry, device, link, isActive);
    *isActive = link_active(entry) ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkVersion(nvmlDevice_t device, unsigned int link, unsigned int *version) {
    REQUIRE_LINK(entry, device, link, version);
    return read_uint(entry, NULL, "version", version);
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci) {
    REQUIRE_LINK(entry, device, link, pci);
    return fill_pci(string_at(entry, "remote_pci_bus_id"), 0, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(nvmlDevice_t device, unsigned int link,
                                                        nvmlIntNvLinkDeviceType_t *type) {
    const char *name;
    REQUIRE_LINK(entry, device, link, type);
    name = string_at(entry, "remote_device_type");
    if (!name) *type = NVML_NVLINK_DEVICE_TYPE_UNKNOWN;
    else if (!strcmp(name, "gpu")) *type = NVML_NVLINK_DEVICE_TYPE_GPU;
    else if (!strcmp(name, "ibmnpu")) *type = NVML_NVLINK_DEVICE_TYPE_IBMNPU;
    else if (!strcmp(name, "switch")) *type = NVML_NVLINK_DEVICE_TYPE_SWITCH;
    else *type = NVML_NVLINK_DEVICE_TYPE_UNKNOWN;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkCapability(nvmlDevice_t device, unsigned int link,
                                                  nvmlNvLinkCapability_t capability, unsigned int *capResult) {
    const json *p2p;
    REQUIRE_LINK(entry, device, link, capResult);
    if (capability == NVML_NVLINK_CAP_P2P_SUPPORTED) {
        p2p = get(entry, "p2p_supported");
        *capResult = (p2p && p2p->type == J_BOOL) ? (unsigned int)p2p->boolean : 0;
    } else {
        *capResult = capability == NVML_NVLINK_CAP_VALID ? 1 : 0;
    }
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkErrorCounter(nvmlDevice_t device, unsigned int link,
                                                    nvmlNvLinkErrorCounter_t counter, unsigned long long *value) {
    static const char *keys[] = {"replay", "recovery", "crc_flit", "crc_data"};
    const json *errors;
    double reading;
    REQUIRE_LINK(entry, device, link, value);
    errors = get(entry, "errors");
    if (!errors || errors->type != J_OBJECT || (unsigned int)counter >= sizeof(keys) / sizeof(keys[0]))
        return NVML_ERROR_NOT_SUPPORTED;
    if (read_number(errors, NULL, keys[counter], &reading) != NVML_SUCCESS) return NVML_ERROR_NOT_SUPPORTED;
    *value = (unsigned long long)reading;
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------------- GPU pairs */

/* The pair object for two GPUs, keyed "i-j" with i < j; NULL if the scenario does not describe it. */
static json *pair_of(nvmlDevice_t first, nvmlDevice_t second) {
    char key[32];
    unsigned int a = ((fake_device *)first)->index, b = ((fake_device *)second)->index;
    snprintf(key, sizeof(key), "%u-%u", a < b ? a : b, a < b ? b : a);
    return get(get(scenario, "pairs"), key);
}

EXPORT nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t device1, nvmlDevice_t device2, nvmlGpuP2PCapsIndex_t p2pIndex,
                                           nvmlGpuP2PStatus_t *p2pStatus) {
    static const char *caps[] = {"read", "write", "nvlink", "atomics", "pci"};
    static const struct { const char *name; nvmlGpuP2PStatus_t status; } statuses[] = {
        {"ok", NVML_P2P_STATUS_OK},
        {"chipset_not_supported", NVML_P2P_STATUS_CHIPSET_NOT_SUPPORTED},
        {"gpu_not_supported", NVML_P2P_STATUS_GPU_NOT_SUPPORTED},
        {"ioh_topology_not_supported", NVML_P2P_STATUS_IOH_TOPOLOGY_NOT_SUPPORTED},
        {"disabled_by_regkey", NVML_P2P_STATUS_DISABLED_BY_REGKEY},
        {"not_supported", NVML_P2P_STATUS_NOT_SUPPORTED},
        {"unknown", NVML_P2P_STATUS_UNKNOWN},
    };
    const char *name;
    size_t i;
    REQUIRE_INIT();
    if (!gpu_of(device1) || !gpu_of(device2) || !p2pStatus || (unsigned int)p2pIndex >= 5)
        return NVML_ERROR_INVALID_ARGUMENT;
    *p2pStatus = NVML_P2P_STATUS_NOT_SUPPORTED;
    name = string_at(get(pair_of(device1, device2), "p2p"), caps[p2pIndex]);
    for (i = 0; name && i < sizeof(statuses) / sizeof(statuses[0]); i++)
        if (!strcmp(name, statuses[i].name)) *p2pStatus = statuses[i].status;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t device1, nvmlDevice_t device2,
                                                        nvmlGpuTopologyLevel_t *pathInfo) {
    static const struct { const char *name; nvmlGpuTopologyLevel_t level; } levels[] = {
        {"internal", NVML_TOPOLOGY_INTERNAL}, {"single", NVML_TOPOLOGY_SINGLE},
        {"multiple", NVML_TOPOLOGY_MULTIPLE}, {"hostbridge", NVML_TOPOLOGY_HOSTBRIDGE},
        {"node", NVML_TOPOLOGY_NODE},         {"system", NVML_TOPOLOGY_SYSTEM},
    };
    const char *name;
    size_t i;
    REQUIRE_INIT();
    if (!gpu_of(device1) || !gpu_of(device2) || !pathInfo) return NVML_ERROR_INVALID_ARGUMENT;
    if (device1 == device2) return NVML_ERROR_INVALID_ARGUMENT;
    name = string_at(pair_of(device1, device2), "topology");
    if (!name) return NVML_ERROR_NOT_SUPPORTED;
    for (i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (!strcmp(name, levels[i].name)) {
            *pathInfo = levels[i].level;
            return NVML_SUCCESS;
        }
    return NVML_ERROR_UNKNOWN;
}
