/*
 * A fake libnvidia-ml.so.1 for testing llmfleet.workstation without a GPU.
 *
 * Compiled against NVIDIA's own nvml.h, so every exported function has NVML's exact signature and the
 * real pynvml loads it with CDLL("libnvidia-ml.so.1") and runs unchanged. GPUs are described by a JSON
 * scenario file ($FAKE_NVML_SCENARIO, else /etc/fake-nvml/scenario.json; schema in README.md), checked
 * when nvmlInit loads it and re-read whenever the file changes, so a test can change a GPU while a
 * module is polling it within one NVML session.
 *
 * Edge behaviour follows real NVML (README.md marks what was recorded from libnvidia-ml itself): calls
 * before nvmlInit (or after the last of as many nvmlShutdown calls) return UNINITIALIZED; NULL output
 * pointers, unknown handles and a link index past the GPU's last link return INVALID_ARGUMENT; NVLink
 * calls on a GPU without NVLink and readings a scenario leaves null or out return NOT_SUPPORTED;
 * nvmlDeviceGetFieldValues succeeds and reports NOT_SUPPORTED (or INVALID_ARGUMENT for an id nvml.h does
 * not define) inside each field it cannot read. Symbols this file does not define do not exist, so pynvml
 * raises NVMLError_FunctionNotFound for them, as with a driver that lacks a function.
 *
 * Self-contained on purpose (a small JSON reader is included): build with
 *   cc -std=c11 -O2 -Wall -Wextra -Werror -fPIC -shared -I<dir of nvml.h> -o libnvidia-ml.so.1 fake_nvml.c
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#define _POSIX_C_SOURCE 200809L
/* Export exactly the (versioned) names pynvml looks up, not the header's #define aliases. */
#define NVML_NO_UNVERSIONED_FUNC_DEFS
#include <nvml.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))
#define MAX_GPUS 64
#define MAX_DEPTH 64
#define DEFAULT_SCENARIO "/etc/fake-nvml/scenario.json"

/* ================================================================ a small, strict JSON reader */

typedef enum { J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } json_type;

typedef struct json {
    json_type type;
    int boolean;         /* J_BOOL */
    double number;       /* J_NUMBER */
    int integral;        /* J_NUMBER written without fraction or exponent */
    char *string;        /* J_STRING, UTF-8 */
    char *key;           /* member name, when the node is an object member */
    struct json *child;  /* first element or member */
    struct json *next;   /* next sibling */
} json;

typedef struct {
    const char *text;
    size_t pos;
    char error[128];
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

static const json *json_get(const json *object, const char *key) {
    const json *member;
    if (!object || object->type != J_OBJECT) return NULL;
    for (member = object->child; member; member = member->next)
        if (!strcmp(member->key, key)) return member;
    return NULL;
}

static const json *json_at(const json *array, size_t index) {
    const json *item;
    if (!array || array->type != J_ARRAY) return NULL;
    for (item = array->child; item && index; item = item->next) index--;
    return item;
}

static size_t json_length(const json *node) {
    size_t n = 0;
    const json *item;
    if (!node || (node->type != J_ARRAY && node->type != J_OBJECT)) return 0;
    for (item = node->child; item; item = item->next) n++;
    return n;
}

static void *fail(json_parser *p, const char *message) {
    if (!p->error[0]) snprintf(p->error, sizeof(p->error), "%s", message);
    return NULL;
}

static json *new_node(json_parser *p, json_type type) {
    json *node = calloc(1, sizeof(*node));
    if (!node) return fail(p, "out of memory");
    node->type = type;
    return node;
}

static void skip_space(json_parser *p) {
    for (;;) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
        p->pos++;
    }
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int hex4(const char *s, unsigned long *out) {
    unsigned long value = 0;
    int i;
    for (i = 0; i < 4; i++) {
        char c = s[i];
        value <<= 4;
        if (c >= '0' && c <= '9') value |= (unsigned long)(c - '0');
        else if (c >= 'a' && c <= 'f') value |= (unsigned long)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') value |= (unsigned long)(c - 'A' + 10);
        else return -1;
    }
    *out = value;
    return 0;
}

typedef struct {
    char *data;
    size_t length, capacity;
} text_buffer;

static int buffer_put(text_buffer *b, const char *bytes, size_t n) {
    if (b->length + n + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 32;
        char *grown;
        while (b->length + n + 1 > capacity) capacity *= 2;
        grown = realloc(b->data, capacity);
        if (!grown) return -1;
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, bytes, n);
    b->length += n;
    b->data[b->length] = '\0';
    return 0;
}

static int put_utf8(text_buffer *b, unsigned long cp) {
    char out[4];
    size_t n;
    if (cp < 0x80) { out[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buffer_put(b, out, n);
}

/* A string starting at the current '"'; the caller owns the result. */
static char *parse_string(json_parser *p) {
    text_buffer out = {0};
    p->pos++; /* opening quote */
    if (buffer_put(&out, "", 0)) return fail(p, "out of memory");
    for (;;) {
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c == '\0') { free(out.data); return fail(p, "unterminated string"); }
        if (c < 0x20) { free(out.data); return fail(p, "control character in a string (escape it)"); }
        if (c == '"') { p->pos++; return out.data; }
        if (c != '\\') {
            if (buffer_put(&out, (const char *)&c, 1)) { free(out.data); return fail(p, "out of memory"); }
            p->pos++;
            continue;
        }
        {
            char e = p->text[p->pos + 1], plain = 0;
            unsigned long cp, low;
            switch (e) {
            case '"': case '\\': case '/': plain = e; break;
            case 'b': plain = '\b'; break;
            case 'f': plain = '\f'; break;
            case 'n': plain = '\n'; break;
            case 'r': plain = '\r'; break;
            case 't': plain = '\t'; break;
            case 'u':
                if (hex4(p->text + p->pos + 2, &cp)) { free(out.data); return fail(p, "invalid \\u escape"); }
                p->pos += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF) { free(out.data); return fail(p, "unpaired UTF-16 surrogate"); }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u' || hex4(p->text + p->pos + 2, &low) ||
                        low < 0xDC00 || low > 0xDFFF) {
                        free(out.data);
                        return fail(p, "unpaired UTF-16 surrogate");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    p->pos += 6;
                }
                if (cp == 0) { free(out.data); return fail(p, "\\u0000 is not allowed in a scenario string"); }
                if (put_utf8(&out, cp)) { free(out.data); return fail(p, "out of memory"); }
                continue;
            default:
                p->pos++;
                free(out.data);
                return fail(p, "invalid escape in a string");
            }
            if (buffer_put(&out, &plain, 1)) { free(out.data); return fail(p, "out of memory"); }
            p->pos += 2;
        }
    }
}

/* A number in JSON's grammar (no hex, no leading '+', no NaN); converted without the C locale. */
static json *parse_number(json_parser *p) {
    const char *s = p->text;
    size_t i = p->pos;
    double mantissa = 0;
    long exponent = 0, written_exponent = 0;
    int negative = 0, exponent_negative = 0, integral = 1;
    json *node;
    if (s[i] == '-') { negative = 1; i++; }
    if (s[i] == '0') {
        i++;
        if (is_digit(s[i])) { p->pos = i; return fail(p, "leading zeros are not allowed in a number"); }
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (is_digit(s[i])) mantissa = mantissa * 10 + (s[i++] - '0');
    } else {
        p->pos = i;
        return fail(p, "invalid number");
    }
    if (s[i] == '.') {
        integral = 0;
        i++;
        if (!is_digit(s[i])) { p->pos = i; return fail(p, "a digit must follow the decimal point"); }
        while (is_digit(s[i])) { mantissa = mantissa * 10 + (s[i++] - '0'); exponent--; }
    }
    if (s[i] == 'e' || s[i] == 'E') {
        integral = 0;
        i++;
        if (s[i] == '+' || s[i] == '-') exponent_negative = s[i++] == '-';
        if (!is_digit(s[i])) { p->pos = i; return fail(p, "a digit must follow the exponent"); }
        while (is_digit(s[i])) {
            if (written_exponent < 100000) written_exponent = written_exponent * 10 + (s[i] - '0');
            i++;
        }
        exponent += exponent_negative ? -written_exponent : written_exponent;
    }
    for (; exponent > 0 && mantissa < 1e308; exponent--) mantissa *= 10;
    for (; exponent < 0 && mantissa > 0; exponent++) mantissa /= 10;
    node = new_node(p, J_NUMBER);
    if (!node) return NULL;
    node->number = negative ? -mantissa : mantissa;
    node->integral = integral;
    p->pos = i;
    return node;
}

static int literal(json_parser *p, const char *word) {
    size_t n = strlen(word);
    char after;
    if (strncmp(p->text + p->pos, word, n)) return 0;
    after = p->text[p->pos + n];
    if ((after >= 'a' && after <= 'z') || (after >= 'A' && after <= 'Z') || is_digit(after) || after == '_')
        return 0;
    p->pos += n;
    return 1;
}

static json *parse_value(json_parser *p, int depth);

static json *parse_container(json_parser *p, int depth, json_type type) {
    const char close = type == J_OBJECT ? '}' : ']';
    json *node = new_node(p, type), **tail;
    if (!node) return NULL;
    tail = &node->child;
    p->pos++;
    skip_space(p);
    if (p->text[p->pos] == close) { p->pos++; return node; }
    for (;;) {
        json *item;
        char *key = NULL;
        skip_space(p);
        if (type == J_OBJECT) {
            size_t key_at = p->pos;
            const json *other;
            if (p->text[p->pos] != '"') {
                fail(p, p->text[p->pos] == close ? "trailing comma"
                        : p->text[p->pos] == '\0' ? "unexpected end of file"
                        : "expected a member name in double quotes");
                goto error;
            }
            if (!(key = parse_string(p))) goto error;
            for (other = node->child; other; other = other->next)
                if (!strcmp(other->key, key)) {
                    snprintf(p->error, sizeof(p->error), "duplicate key \"%.80s\"", key);
                    p->pos = key_at;
                    free(key);
                    goto error;
                }
            skip_space(p);
            if (p->text[p->pos] != ':') {
                free(key);
                fail(p, p->text[p->pos] == '\0' ? "unexpected end of file" : "expected ':' after a member name");
                goto error;
            }
            p->pos++;
        } else if (p->text[p->pos] == close) {
            fail(p, "trailing comma");
            goto error;
        }
        if (!(item = parse_value(p, depth + 1))) { free(key); goto error; }
        item->key = key;
        *tail = item;
        tail = &item->next;
        skip_space(p);
        if (p->text[p->pos] == ',') { p->pos++; continue; }
        if (p->text[p->pos] == close) { p->pos++; return node; }
        if (p->text[p->pos] == '\0') fail(p, "unexpected end of file");
        else fail(p, type == J_OBJECT ? "expected ',' or '}'" : "expected ',' or ']'");
        goto error;
    }
error:
    json_free(node);
    return NULL;
}

static json *parse_value(json_parser *p, int depth) {
    json *node;
    char c;
    if (depth > MAX_DEPTH) return fail(p, "nested too deeply");
    skip_space(p);
    c = p->text[p->pos];
    if (c == '{') return parse_container(p, depth, J_OBJECT);
    if (c == '[') return parse_container(p, depth, J_ARRAY);
    if (c == '"') {
        char *string = parse_string(p);
        if (!string) return NULL;
        if (!(node = new_node(p, J_STRING))) { free(string); return NULL; }
        node->string = string;
        return node;
    }
    if (c == '-' || is_digit(c)) return parse_number(p);
    if (literal(p, "true")) {
        if ((node = new_node(p, J_BOOL))) node->boolean = 1;
        return node;
    }
    if (literal(p, "false")) return new_node(p, J_BOOL);
    if (literal(p, "null")) return new_node(p, J_NULL);
    return fail(p, c == '\0' ? "unexpected end of file" : "unexpected character");
}

/* ================================================================ NVML names */

typedef struct {
    const char *name;
    long long value;
} named;

static const named *find_named(const named *table, size_t n, const char *name) {
    size_t i;
    for (i = 0; name && i < n; i++)
        if (!strcmp(table[i].name, name)) return &table[i];
    return NULL;
}

static const struct {
    nvmlReturn_t code;
    const char *name;
    const char *text; /* what libnvidia-ml's nvmlErrorString answers (recorded from driver 580.159.04) */
} nvml_errors[] = {
    {NVML_SUCCESS, "SUCCESS", "Success"},
    {NVML_ERROR_UNINITIALIZED, "UNINITIALIZED", "Uninitialized"},
    {NVML_ERROR_INVALID_ARGUMENT, "INVALID_ARGUMENT", "Invalid Argument"},
    {NVML_ERROR_NOT_SUPPORTED, "NOT_SUPPORTED", "Not Supported"},
    {NVML_ERROR_NO_PERMISSION, "NO_PERMISSION", "Insufficient Permissions"},
    {NVML_ERROR_ALREADY_INITIALIZED, "ALREADY_INITIALIZED", "Already Initialized"},
    {NVML_ERROR_NOT_FOUND, "NOT_FOUND", "Not Found"},
    {NVML_ERROR_INSUFFICIENT_SIZE, "INSUFFICIENT_SIZE", "Insufficient Size"},
    {NVML_ERROR_INSUFFICIENT_POWER, "INSUFFICIENT_POWER", "Insufficient External Power"},
    {NVML_ERROR_DRIVER_NOT_LOADED, "DRIVER_NOT_LOADED", "Driver Not Loaded"},
    {NVML_ERROR_TIMEOUT, "TIMEOUT", "Timeout"},
    {NVML_ERROR_IRQ_ISSUE, "IRQ_ISSUE", "Interrupt Request Issue"},
    {NVML_ERROR_LIBRARY_NOT_FOUND, "LIBRARY_NOT_FOUND", "NVML Shared Library Not Found"},
    {NVML_ERROR_FUNCTION_NOT_FOUND, "FUNCTION_NOT_FOUND", "Function Not Found"},
    {NVML_ERROR_CORRUPTED_INFOROM, "CORRUPTED_INFOROM", "Corrupted infoROM"},
    {NVML_ERROR_GPU_IS_LOST, "GPU_IS_LOST", "GPU is lost"},
    {NVML_ERROR_RESET_REQUIRED, "RESET_REQUIRED", "GPU requires reset"},
    {NVML_ERROR_OPERATING_SYSTEM, "OPERATING_SYSTEM", "GPU access blocked by the operating system"},
    {NVML_ERROR_LIB_RM_VERSION_MISMATCH, "LIB_RM_VERSION_MISMATCH", "Driver/library version mismatch"},
    {NVML_ERROR_IN_USE, "IN_USE", "In use by another client"},
    {NVML_ERROR_MEMORY, "MEMORY", "Insufficient Memory"},
    {NVML_ERROR_NO_DATA, "NO_DATA", "No data"},
    {NVML_ERROR_VGPU_ECC_NOT_SUPPORTED, "VGPU_ECC_NOT_SUPPORTED", "vGPU ECC not supported"},
    {NVML_ERROR_INSUFFICIENT_RESOURCES, "INSUFFICIENT_RESOURCES", "Insufficient Resources"},
    {NVML_ERROR_FREQ_NOT_SUPPORTED, "FREQ_NOT_SUPPORTED", "Invalid Frequency"},
    {NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "ARGUMENT_VERSION_MISMATCH", "Argument version mismatch"},
    {NVML_ERROR_DEPRECATED, "DEPRECATED", "Requested functionality has been deprecated"},
    {NVML_ERROR_NOT_READY, "NOT_READY", "System is not in ready state"},
    {NVML_ERROR_GPU_NOT_FOUND, "GPU_NOT_FOUND", "No supported GPUs were found"},
    {NVML_ERROR_INVALID_STATE, "INVALID_STATE", "Resource not in correct state to perform requested operation"},
    {NVML_ERROR_RESET_TYPE_NOT_SUPPORTED, "RESET_TYPE_NOT_SUPPORTED", "Reset type is not supported for given device"},
    {NVML_ERROR_UNKNOWN, "UNKNOWN", "Unknown Error"},
};

/* An init_error value: "DRIVER_NOT_LOADED", "NVML_ERROR_DRIVER_NOT_LOADED" (any case) or the number. */
static int init_error_code(const json *node, nvmlReturn_t *code) {
    size_t i;
    const char *name;
    if (node->type == J_NUMBER) {
        for (i = 1; i < COUNT_OF(nvml_errors); i++)
            if (node->integral && node->number == (double)nvml_errors[i].code) { *code = nvml_errors[i].code; return 0; }
        return -1;
    }
    if (node->type != J_STRING) return -1;
    name = node->string;
    if (!strncasecmp(name, "NVML_ERROR_", 11)) name += 11;
    for (i = 1; i < COUNT_OF(nvml_errors); i++) /* from 1: SUCCESS is not an error */
        if (!strcasecmp(name, nvml_errors[i].name)) { *code = nvml_errors[i].code; return 0; }
    return -1;
}

static const named link_states[] = {{"active", NVML_FEATURE_ENABLED}, {"inactive", NVML_FEATURE_DISABLED}};

static const named remote_device_types[] = {
    {"gpu", NVML_NVLINK_DEVICE_TYPE_GPU},
    {"ibmnpu", NVML_NVLINK_DEVICE_TYPE_IBMNPU},
    {"switch", NVML_NVLINK_DEVICE_TYPE_SWITCH},
    {"unknown", NVML_NVLINK_DEVICE_TYPE_UNKNOWN},
};

static const named p2p_statuses[] = {
    {"ok", NVML_P2P_STATUS_OK},
    {"chipset_not_supported", NVML_P2P_STATUS_CHIPSET_NOT_SUPPORTED},
    {"gpu_not_supported", NVML_P2P_STATUS_GPU_NOT_SUPPORTED},
    {"ioh_topology_not_supported", NVML_P2P_STATUS_IOH_TOPOLOGY_NOT_SUPPORTED},
    {"disabled_by_regkey", NVML_P2P_STATUS_DISABLED_BY_REGKEY},
    {"not_supported", NVML_P2P_STATUS_NOT_SUPPORTED},
    {"unknown", NVML_P2P_STATUS_UNKNOWN},
};

/* Keys of a pair's "p2p" object, by nvmlGpuP2PCapsIndex_t ("pci" is nvml.h's older name for "prop"). */
static const named p2p_caps[] = {
    {"read", NVML_P2P_CAPS_INDEX_READ},     {"write", NVML_P2P_CAPS_INDEX_WRITE},
    {"nvlink", NVML_P2P_CAPS_INDEX_NVLINK}, {"atomics", NVML_P2P_CAPS_INDEX_ATOMICS},
    {"prop", NVML_P2P_CAPS_INDEX_PROP},     {"pci", NVML_P2P_CAPS_INDEX_PCI},
};

static const named topology_levels[] = {
    {"internal", NVML_TOPOLOGY_INTERNAL},     {"single", NVML_TOPOLOGY_SINGLE}, {"multiple", NVML_TOPOLOGY_MULTIPLE},
    {"hostbridge", NVML_TOPOLOGY_HOSTBRIDGE}, {"node", NVML_TOPOLOGY_NODE},     {"system", NVML_TOPOLOGY_SYSTEM},
};

static const named brands[] = {
    {"unknown", NVML_BRAND_UNKNOWN},
    {"quadro", NVML_BRAND_QUADRO},
    {"tesla", NVML_BRAND_TESLA},
    {"nvs", NVML_BRAND_NVS},
    {"grid", NVML_BRAND_GRID},
    {"geforce", NVML_BRAND_GEFORCE},
    {"titan", NVML_BRAND_TITAN},
    {"nvidia_vapps", NVML_BRAND_NVIDIA_VAPPS},
    {"nvidia_vpc", NVML_BRAND_NVIDIA_VPC},
    {"nvidia_vcs", NVML_BRAND_NVIDIA_VCS},
    {"nvidia_vws", NVML_BRAND_NVIDIA_VWS},
    {"nvidia_cloud_gaming", NVML_BRAND_NVIDIA_CLOUD_GAMING},
    {"quadro_rtx", NVML_BRAND_QUADRO_RTX},
    {"nvidia_rtx", NVML_BRAND_NVIDIA_RTX},
    {"nvidia", NVML_BRAND_NVIDIA},
    {"geforce_rtx", NVML_BRAND_GEFORCE_RTX},
    {"titan_rtx", NVML_BRAND_TITAN_RTX},
};

static const named clock_event_reasons[] = {
    {"gpu_idle", nvmlClocksEventReasonGpuIdle},
    {"applications_clocks_setting", nvmlClocksEventReasonApplicationsClocksSetting},
    {"sw_power_cap", nvmlClocksEventReasonSwPowerCap},
    {"hw_slowdown", nvmlClocksThrottleReasonHwSlowdown},
    {"sync_boost", nvmlClocksEventReasonSyncBoost},
    {"sw_thermal_slowdown", nvmlClocksEventReasonSwThermalSlowdown},
    {"hw_thermal_slowdown", nvmlClocksThrottleReasonHwThermalSlowdown},
    {"hw_power_brake_slowdown", nvmlClocksThrottleReasonHwPowerBrakeSlowdown},
    {"display_clock_setting", nvmlClocksEventReasonDisplayClockSetting},
    {"board_limit", nvmlClocksEventReasonBoardLimit},
    {"reliability", nvmlClocksEventReasonReliability},
};

/* Keys of "temperature" read by nvmlDeviceGetTemperatureThreshold, by nvmlTemperatureThresholds_t. */
static const char *const threshold_keys[NVML_TEMPERATURE_THRESHOLD_COUNT] = {
    [NVML_TEMPERATURE_THRESHOLD_SHUTDOWN] = "shutdown_c",
    [NVML_TEMPERATURE_THRESHOLD_SLOWDOWN] = "slowdown_c",
    [NVML_TEMPERATURE_THRESHOLD_MEM_MAX] = "memory_max_c",
    [NVML_TEMPERATURE_THRESHOLD_GPU_MAX] = "gpu_max_c",
    [NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_MIN] = "acoustic_min_c",
    [NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR] = "acoustic_curr_c",
    [NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_MAX] = "acoustic_max_c",
    [NVML_TEMPERATURE_THRESHOLD_GPS_CURR] = "gps_curr_c",
};

/* Keys of "temperature" read by nvmlDeviceGetTemperature(V), by nvmlTemperatureSensors_t. */
static const char *const sensor_keys[NVML_TEMPERATURE_COUNT] = {
    [NVML_TEMPERATURE_GPU] = "gpu_c",
    [NVML_TEMPERATURE_GPU_MAX] = "hotspot_c",
};

/* Keys of a link read by nvmlDeviceGetNvLinkCapability, by nvmlNvLinkCapability_t, and their defaults. */
static const named link_capabilities[NVML_NVLINK_CAP_COUNT] = {
    [NVML_NVLINK_CAP_P2P_SUPPORTED] = {"p2p_supported", 0},
    [NVML_NVLINK_CAP_SYSMEM_ACCESS] = {"sysmem_access", 0},
    [NVML_NVLINK_CAP_P2P_ATOMICS] = {"p2p_atomics", 0},
    [NVML_NVLINK_CAP_SYSMEM_ATOMICS] = {"sysmem_atomics", 0},
    [NVML_NVLINK_CAP_SLI_BRIDGE] = {"sli_bridge", 0},
    [NVML_NVLINK_CAP_VALID] = {"valid", 1},
};

/* Keys of a link's "errors" read by nvmlDeviceGetNvLinkErrorCounter, by nvmlNvLinkErrorCounter_t. */
static const char *const error_counter_keys[NVML_NVLINK_ERROR_COUNT] = {
    [NVML_NVLINK_ERROR_DL_REPLAY] = "replay",
    [NVML_NVLINK_ERROR_DL_RECOVERY] = "recovery",
    [NVML_NVLINK_ERROR_DL_CRC_FLIT] = "crc_flit",
    [NVML_NVLINK_ERROR_DL_CRC_DATA] = "crc_data",
    [NVML_NVLINK_ERROR_DL_ECC_DATA] = "ecc_data",
};

/* ================================================================ scenario checks */

typedef enum {
    V_STRING,     /* any string */
    V_SHORT,      /* a string that fits NVML's 80/96-byte buffers */
    V_UINT,       /* integer 0..UINT_MAX */
    V_INT,        /* integer INT_MIN..INT_MAX */
    V_COUNTER,    /* integer 0..2^53 */
    V_MIB,        /* number >= 0 */
    V_FLAG,       /* true/false or 0/1 */
    V_BOOL,       /* true/false */
    V_ENUM,       /* one of `names` */
    V_BRAND,      /* a brand name or an nvmlBrandType_t number */
    V_REASONS,    /* a list of clock-event reason names, or the bitmask */
    V_BUS_ID,     /* "00000000:01:00.0" or "0000:01:00.0" */
    V_INIT_ERROR, /* an NVML error name or code */
    V_OBJECT,     /* checked further by the caller */
    V_ARRAY,      /* checked further by the caller */
    V_FIELDS,     /* {"<field id>": number or null} */
} value_kind;

typedef struct {
    const char *key;
    value_kind kind;
    int nullable; /* null allowed (it means NOT_SUPPORTED) */
    int required;
    const named *names;
    size_t name_count;
} rule;

#define RULE(key, kind) {key, kind, 1, 0, NULL, 0}
#define NOT_NULL(key, kind, required) {key, kind, 0, required, NULL, 0}
#define ENUM_RULE(key, table) {key, V_ENUM, 1, 0, table, COUNT_OF(table)}

static const rule top_rules[] = {
    RULE("init_error", V_INIT_ERROR), RULE("driver_version", V_SHORT), RULE("cuda_driver_version", V_INT),
    RULE("nvml_version", V_SHORT),    NOT_NULL("gpus", V_ARRAY, 0),   NOT_NULL("pairs", V_OBJECT, 0),
};

static const rule gpu_rules[] = {
    RULE("name", V_SHORT),
    RULE("uuid", V_SHORT),
    RULE("pci_bus_id", V_BUS_ID),
    RULE("pci_device_id", V_UINT),
    RULE("pci_subsystem_id", V_UINT),
    RULE("pci_base_class", V_UINT),
    RULE("pci_sub_class", V_UINT),
    RULE("minor_number", V_UINT),
    RULE("brand", V_BRAND),
    RULE("memory_total_mib", V_MIB),
    RULE("memory_used_mib", V_MIB),
    RULE("memory_reserved_mib", V_MIB),
    RULE("persistence_mode", V_BOOL),
    RULE("pcie", V_OBJECT),
    RULE("power", V_OBJECT),
    RULE("fan_speed_pct", V_UINT),
    RULE("num_fans", V_UINT),
    RULE("temperature", V_OBJECT),
    RULE("clocks_event_reasons", V_REASONS),
    RULE("field_values", V_FIELDS),
    RULE("nvlink", V_OBJECT),
};

static const rule pcie_rules[] = {
    RULE("current_gen", V_UINT), RULE("max_gen", V_UINT),   RULE("gpu_max_gen", V_UINT),
    RULE("current_width", V_UINT), RULE("max_width", V_UINT),
};

static const rule power_rules[] = {
    RULE("usage_mw", V_UINT),         RULE("enforced_limit_mw", V_UINT), RULE("limit_mw", V_UINT),
    RULE("default_limit_mw", V_UINT), RULE("min_limit_mw", V_UINT),      RULE("max_limit_mw", V_UINT),
    RULE("settable", V_BOOL),
};

static const rule temperature_rules[] = {
    RULE("gpu_c", V_UINT),          RULE("hotspot_c", V_UINT),      RULE("memory_c", V_UINT),
    RULE("shutdown_c", V_UINT),     RULE("slowdown_c", V_UINT),     RULE("memory_max_c", V_UINT),
    RULE("gpu_max_c", V_UINT),      RULE("acoustic_min_c", V_UINT), RULE("acoustic_curr_c", V_UINT),
    RULE("acoustic_max_c", V_UINT), RULE("gps_curr_c", V_UINT),
};

static const rule nvlink_rules[] = {NOT_NULL("links", V_ARRAY, 1)};

static const rule link_rules[] = {
    {"state", V_ENUM, 0, 1, link_states, COUNT_OF(link_states)},
    RULE("version", V_UINT),
    RULE("remote_pci_bus_id", V_BUS_ID),
    RULE("remote_pci_device_id", V_UINT),
    ENUM_RULE("remote_device_type", remote_device_types),
    RULE("p2p_supported", V_FLAG),
    RULE("sysmem_access", V_FLAG),
    RULE("p2p_atomics", V_FLAG),
    RULE("sysmem_atomics", V_FLAG),
    RULE("sli_bridge", V_FLAG),
    RULE("valid", V_FLAG),
    RULE("errors", V_OBJECT),
};

static const rule error_counter_rules[] = {
    RULE("replay", V_COUNTER),   RULE("recovery", V_COUNTER), RULE("crc_flit", V_COUNTER),
    RULE("crc_data", V_COUNTER), RULE("ecc_data", V_COUNTER),
};

static const rule pair_rules[] = {RULE("p2p", V_OBJECT), ENUM_RULE("topology", topology_levels)};

typedef struct {
    char message[512];
} problem;

static int report(problem *why, const char *path, const char *what) {
    snprintf(why->message, sizeof(why->message), "scenario error at %.200s: %.250s", path[0] ? path : "(top level)",
             what);
    return -1;
}

/* Members documenting a scenario, ignored everywhere. */
static int is_note(const char *key) { return key[0] == '_' || !strcmp(key, "description") || !strcmp(key, "comment"); }

static int is_integer_in(const json *node, double low, double high) {
    return node->type == J_NUMBER && node->integral && node->number >= low && node->number <= high;
}

static int parse_bus_id(const char *text, unsigned int *domain, unsigned int *bus, unsigned int *device,
                        unsigned int *function) {
    char tail;
    if (!text) return -1;
    if (sscanf(text, "%x:%x:%x.%x%c", domain, bus, device, function, &tail) == 4) return 0;
    *domain = 0;
    if (sscanf(text, "%x:%x.%x%c", bus, device, function, &tail) == 3) return 0;
    return -1;
}

static int check_value(const json *node, const rule *r, const char *path, problem *why) {
    unsigned int domain, bus, device, function;
    nvmlReturn_t code;
    const json *item;
    char item_path[256];
    size_t i;
    switch (r->kind) {
    case V_STRING:
        return node->type == J_STRING ? 0 : report(why, path, "expected a string");
    case V_SHORT:
        if (node->type != J_STRING) return report(why, path, "expected a string");
        return strlen(node->string) < 80 ? 0 : report(why, path, "longer than NVML's 80-byte buffer");
    case V_UINT:
        return is_integer_in(node, 0, UINT_MAX) ? 0 : report(why, path, "expected an integer from 0 to 4294967295");
    case V_INT:
        return is_integer_in(node, INT_MIN, INT_MAX) ? 0 : report(why, path, "expected a 32-bit integer");
    case V_COUNTER:
        return is_integer_in(node, 0, 9007199254740992.0) ? 0 : report(why, path, "expected an integer >= 0");
    case V_MIB:
        return node->type == J_NUMBER && node->number >= 0 && node->number < 1e12 ? 0
               : report(why, path, "expected a number of MiB >= 0");
    case V_FLAG:
        return node->type == J_BOOL || is_integer_in(node, 0, 1) ? 0 : report(why, path, "expected true or false");
    case V_BOOL:
        return node->type == J_BOOL ? 0 : report(why, path, "expected true or false");
    case V_ENUM:
        if (node->type == J_STRING && find_named(r->names, r->name_count, node->string)) return 0;
        snprintf(item_path, sizeof(item_path), "expected one of \"%s\"", r->names[0].name); /* the message */
        for (i = 1; i < r->name_count; i++) {
            size_t used = strlen(item_path);
            snprintf(item_path + used, sizeof(item_path) - used, ", \"%s\"", r->names[i].name);
        }
        return report(why, path, item_path);
    case V_BRAND:
        if (node->type == J_STRING && find_named(brands, COUNT_OF(brands), node->string)) return 0;
        return is_integer_in(node, 0, INT_MAX) ? 0 : report(why, path, "expected a brand name (\"geforce\", "
                                                                     "\"nvidia\", ...) or an nvmlBrandType_t number");
    case V_REASONS:
        if (is_integer_in(node, 0, 9007199254740992.0)) return 0;
        if (node->type != J_ARRAY) return report(why, path, "expected a list of clock event reason names or a bitmask");
        for (i = 0, item = node->child; item; item = item->next, i++) {
            snprintf(item_path, sizeof(item_path), "%.200s[%zu]", path, i);
            if (item->type != J_STRING || !find_named(clock_event_reasons, COUNT_OF(clock_event_reasons), item->string))
                return report(why, item_path, "unknown clock event reason (see README.md for the names)");
        }
        return 0;
    case V_BUS_ID:
        if (node->type == J_STRING &&
            parse_bus_id(node->string, &domain, &bus, &device, &function) == 0 && bus <= 0xFF && device <= 0xFF &&
            function <= 0xF)
            return 0;
        return report(why, path, "expected a PCI bus id like \"00000000:01:00.0\"");
    case V_INIT_ERROR:
        return init_error_code(node, &code) == 0 ? 0
               : report(why, path, "expected an NVML error name such as \"DRIVER_NOT_LOADED\" or its number");
    case V_OBJECT:
        return node->type == J_OBJECT ? 0 : report(why, path, "expected an object");
    case V_ARRAY:
        return node->type == J_ARRAY ? 0 : report(why, path, "expected a list");
    case V_FIELDS:
        if (node->type != J_OBJECT) return report(why, path, "expected an object of field id -> value");
        for (item = node->child; item; item = item->next) {
            char *end;
            unsigned long id;
            if (is_note(item->key)) continue;
            snprintf(item_path, sizeof(item_path), "%.200s.%.40s", path, item->key);
            errno = 0;
            id = strtoul(item->key, &end, 10);
            if (!is_digit(item->key[0]) || *end || errno || id > UINT_MAX)
                return report(why, item_path, "field ids are decimal numbers (nvml.h NVML_FI_*)");
            if (item->type != J_NULL && item->type != J_NUMBER)
                return report(why, item_path, "expected a number, or null for NOT_SUPPORTED");
        }
        return 0;
    }
    return report(why, path, "internal error: unknown rule");
}

/* Check an object's members against `rules`: unknown keys are errors (a typo would read as NOT_SUPPORTED). */
static int check_object(const json *node, const char *path, const rule *rules, size_t count, problem *why) {
    const json *member;
    char member_path[256];
    size_t i;
    if (!node || node->type != J_OBJECT) return report(why, path, "expected an object");
    for (member = node->child; member; member = member->next) {
        const rule *r = NULL;
        if (is_note(member->key)) continue;
        snprintf(member_path, sizeof(member_path), "%.200s%s%.40s", path, path[0] ? "." : "", member->key);
        for (i = 0; i < count && !r; i++)
            if (!strcmp(rules[i].key, member->key)) r = &rules[i];
        if (!r) return report(why, member_path, "unknown key");
        if (member->type == J_NULL) {
            if (!r->nullable) return report(why, member_path, "may not be null");
            continue;
        }
        if (check_value(member, r, member_path, why)) return -1;
    }
    for (i = 0; i < count; i++)
        if (rules[i].required && !json_get(node, rules[i].key)) {
            snprintf(member_path, sizeof(member_path), "%.200s%s%.40s", path, path[0] ? "." : "", rules[i].key);
            return report(why, member_path, "missing");
        }
    return 0;
}

static int check_link(const json *link, const char *path, problem *why) {
    const json *errors;
    char sub[256];
    if (check_object(link, path, link_rules, COUNT_OF(link_rules), why)) return -1;
    errors = json_get(link, "errors");
    snprintf(sub, sizeof(sub), "%.200s.errors", path);
    if (errors && errors->type == J_OBJECT &&
        check_object(errors, sub, error_counter_rules, COUNT_OF(error_counter_rules), why))
        return -1;
    return 0;
}

static int check_gpu(const json *gpu, const char *path, problem *why) {
    static const struct { const char *key; const rule *rules; size_t count; } sections[] = {
        {"pcie", pcie_rules, COUNT_OF(pcie_rules)},
        {"power", power_rules, COUNT_OF(power_rules)},
        {"temperature", temperature_rules, COUNT_OF(temperature_rules)},
    };
    const json *nvlink, *links, *link, *name;
    char sub[256];
    size_t i;
    if (check_object(gpu, path, gpu_rules, COUNT_OF(gpu_rules), why)) return -1;
    name = json_get(gpu, "name");
    if (name && name->type == J_STRING && strlen(name->string) >= NVML_DEVICE_NAME_V2_BUFFER_SIZE) {
        snprintf(sub, sizeof(sub), "%.200s.name", path);
        return report(why, sub, "longer than NVML's name buffer");
    }
    for (i = 0; i < COUNT_OF(sections); i++) {
        const json *section = json_get(gpu, sections[i].key);
        snprintf(sub, sizeof(sub), "%.200s.%.20s", path, sections[i].key);
        if (section && section->type == J_OBJECT && check_object(section, sub, sections[i].rules, sections[i].count, why))
            return -1;
    }
    nvlink = json_get(gpu, "nvlink");
    if (!nvlink || nvlink->type != J_OBJECT) return 0;
    snprintf(sub, sizeof(sub), "%.200s.nvlink", path);
    if (check_object(nvlink, sub, nvlink_rules, COUNT_OF(nvlink_rules), why)) return -1;
    links = json_get(nvlink, "links");
    snprintf(sub, sizeof(sub), "%.200s.nvlink.links", path);
    if (json_length(links) < 1 || json_length(links) > NVML_NVLINK_MAX_LINKS)
        return report(why, sub, "expected 1 to 36 links (nvlink: null is a GPU without NVLink)");
    for (i = 0, link = links->child; link; link = link->next, i++) {
        snprintf(sub, sizeof(sub), "%.200s.nvlink.links[%zu]", path, i);
        if (check_link(link, sub, why)) return -1;
    }
    return 0;
}

static int check_pairs(const json *pairs, size_t gpu_count, problem *why) {
    const json *pair, *p2p, *cap;
    char path[256];
    for (pair = pairs ? pairs->child : NULL; pair; pair = pair->next) {
        unsigned int first, second;
        char tail;
        if (is_note(pair->key)) continue;
        snprintf(path, sizeof(path), "pairs.%s", pair->key);
        if (sscanf(pair->key, "%u-%u%c", &first, &second, &tail) != 2 || first >= gpu_count ||
            second >= gpu_count || !is_digit(pair->key[0]))
            return report(why, path, "pair keys are \"i-j\": indexes of GPUs in \"gpus\"");
        if (check_object(pair, path, pair_rules, COUNT_OF(pair_rules), why)) return -1;
        p2p = json_get(pair, "p2p");
        for (cap = p2p && p2p->type == J_OBJECT ? p2p->child : NULL; cap; cap = cap->next) {
            const rule status = ENUM_RULE("", p2p_statuses);
            char cap_path[300];
            if (is_note(cap->key)) continue;
            snprintf(cap_path, sizeof(cap_path), "%.200s.p2p.%.40s", path, cap->key);
            if (!find_named(p2p_caps, COUNT_OF(p2p_caps), cap->key))
                return report(why, cap_path, "unknown P2P capability (read, write, nvlink, atomics, prop)");
            if (cap->type != J_NULL && check_value(cap, &status, cap_path, why)) return -1;
        }
    }
    return 0;
}

static int check_scenario(const json *root, problem *why) {
    const json *gpus, *gpu;
    char path[64];
    size_t i;
    if (!root || root->type != J_OBJECT) return report(why, "", "the scenario must be a JSON object");
    if (check_object(root, "", top_rules, COUNT_OF(top_rules), why)) return -1;
    gpus = json_get(root, "gpus");
    if (json_length(gpus) > MAX_GPUS) return report(why, "gpus", "more GPUs than this fake supports (64)");
    for (i = 0, gpu = gpus ? gpus->child : NULL; gpu; gpu = gpu->next, i++) {
        snprintf(path, sizeof(path), "gpus[%zu]", i);
        if (check_gpu(gpu, path, why)) return -1;
    }
    return check_pairs(json_get(root, "pairs"), json_length(gpus), why);
}

/* ================================================================ loading and live reload */

typedef struct {
    int known;
    dev_t device;
    ino_t inode;
    off_t size;
    struct timespec mtime;
} file_stamp;

static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int init_count;
static json *scenario;           /* the scenario in force while initialized */
static char scenario_path[4096]; /* chosen at the first nvmlInit */
static file_stamp tried;         /* the file version last loaded or tried */

static void stamp_from(const struct stat *info, file_stamp *stamp) {
    stamp->known = 1;
    stamp->device = info->st_dev;
    stamp->inode = info->st_ino;
    stamp->size = info->st_size;
    stamp->mtime = info->st_mtim;
}

static int same_stamp(const file_stamp *a, const file_stamp *b) {
    return a->known && b->known && a->device == b->device && a->inode == b->inode && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static void position_of(const char *text, size_t offset, size_t *line, size_t *column) {
    size_t i, line_start = 0;
    *line = 1;
    for (i = 0; i < offset; i++)
        if (text[i] == '\n') { (*line)++; line_start = i + 1; }
    *column = offset - line_start + 1;
}

/* Read, parse and check the scenario at `path`; on error, `why` says what and where. */
static json *load_scenario(const char *path, file_stamp *stamp, problem *why) {
    FILE *file = fopen(path, "rb");
    struct stat info;
    char *text;
    size_t length;
    json_parser parser;
    json *root;
    if (!file) {
        snprintf(why->message, sizeof(why->message), "cannot open: %s", strerror(errno));
        return NULL;
    }
    if (fstat(fileno(file), &info) != 0 || !S_ISREG(info.st_mode) || info.st_size > 16 * 1024 * 1024) {
        snprintf(why->message, sizeof(why->message), "not a regular file of at most 16 MiB");
        fclose(file);
        return NULL;
    }
    stamp_from(&info, stamp);
    text = malloc((size_t)info.st_size + 1);
    if (!text) {
        snprintf(why->message, sizeof(why->message), "out of memory");
        fclose(file);
        return NULL;
    }
    length = fread(text, 1, (size_t)info.st_size, file);
    fclose(file);
    text[length] = '\0';
    memset(&parser, 0, sizeof(parser));
    parser.text = text;
    if (strlen(text) != length) {
        parser.pos = strlen(text);
        fail(&parser, "NUL byte in the file");
        root = NULL;
    } else {
        skip_space(&parser);
        if (parser.text[parser.pos] == '\0') {
            fail(&parser, "the file is empty");
            root = NULL;
        } else if ((root = parse_value(&parser, 0))) {
            skip_space(&parser);
            if (parser.text[parser.pos] != '\0') {
                fail(&parser, "unexpected text after the JSON value");
                json_free(root);
                root = NULL;
            }
        }
    }
    if (!root) {
        size_t line, column;
        position_of(text, parser.pos, &line, &column);
        snprintf(why->message, sizeof(why->message), "JSON syntax error at line %zu, column %zu (byte %zu): %s", line,
                 column, parser.pos, parser.error);
        free(text);
        return NULL;
    }
    free(text);
    if (check_scenario(root, why)) {
        json_free(root);
        return NULL;
    }
    return root;
}

/* Live reload: if the file changed since it was last read (mtime to the nanosecond, size, inode), read it
 * again. A version that cannot be used is reported once on stderr and the previous scenario stays. */
static void reload_if_changed(void) {
    struct stat info;
    file_stamp now, loaded = {0};
    problem why;
    json *fresh;
    if (stat(scenario_path, &info) != 0) return; /* gone for a moment (being replaced): keep the current one */
    stamp_from(&info, &now);
    if (same_stamp(&now, &tried)) return;
    fresh = load_scenario(scenario_path, &loaded, &why);
    tried = loaded.known ? loaded : now;
    if (!fresh) {
        fprintf(stderr, "fake-nvml: scenario %s changed but cannot be used, keeping the previous one: %s\n",
                scenario_path, why.message);
        return;
    }
    json_free(scenario);
    scenario = fresh;
}

/* ================================================================ helpers for the API */

typedef struct {
    unsigned int index;
} fake_device;

static fake_device devices[MAX_GPUS];

static const json *gpu_list(void) { return json_get(scenario, "gpus"); }
static unsigned int gpu_count(void) { return (unsigned int)json_length(gpu_list()); }

static nvmlDevice_t handle_of(unsigned int index) { return (nvmlDevice_t)(void *)&devices[index]; }

/* The scenario object of a handle, or NULL for a handle this library did not give out (or a GPU that a
 * reload removed). */
static const json *gpu_of(nvmlDevice_t device, unsigned int *index) {
    uintptr_t at = (uintptr_t)(void *)device, base = (uintptr_t)(void *)devices;
    size_t slot;
    if (at < base || at >= base + sizeof(devices) || (at - base) % sizeof(fake_device)) return NULL;
    slot = (at - base) / sizeof(fake_device);
    if (slot >= gpu_count()) return NULL;
    if (index) *index = (unsigned int)slot;
    return json_at(gpu_list(), slot);
}

static nvmlReturn_t begin(void) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    reload_if_changed();
    return NVML_SUCCESS;
}

/* Start of a per-device call: initialized, a known handle, a non-NULL output. */
#define BEGIN_GPU(gpu, device, out)                                                          \
    const json *gpu;                                                                         \
    do {                                                                                     \
        nvmlReturn_t begun_ = begin();                                                       \
        if (begun_ != NVML_SUCCESS) return begun_;                                           \
        gpu = gpu_of(device, NULL);                                                          \
        if (!gpu || !(out)) return NVML_ERROR_INVALID_ARGUMENT;                              \
    } while (0)

/* One exported NVML function: serialized (NVML is thread-safe; a reload frees the old scenario), with its
 * body in NAME_impl so that other functions of this file can call it without taking the lock again. */
#define API(name, params, args)                                                              \
    static nvmlReturn_t name##_impl params;                                                  \
    EXPORT nvmlReturn_t name params {                                                        \
        nvmlReturn_t status_;                                                                \
        pthread_mutex_lock(&state_lock);                                                     \
        status_ = name##_impl args;                                                          \
        pthread_mutex_unlock(&state_lock);                                                   \
        return status_;                                                                      \
    }                                                                                        \
    static nvmlReturn_t name##_impl params

/* A value the scenario declares as a number; null or absent is NOT_SUPPORTED. */
static nvmlReturn_t number_at(const json *object, const char *key, double *value) {
    const json *node = json_get(object, key);
    if (!node || node->type != J_NUMBER) return NVML_ERROR_NOT_SUPPORTED;
    *value = node->number;
    return NVML_SUCCESS;
}

static nvmlReturn_t uint_at(const json *object, const char *key, unsigned int *out) {
    double value;
    nvmlReturn_t status = number_at(object, key, &value);
    if (status == NVML_SUCCESS) *out = (unsigned int)value;
    return status;
}

/* A true/false (or 0/1) value; null is NOT_SUPPORTED, absent is `fallback`. */
static nvmlReturn_t flag_at(const json *object, const char *key, unsigned int fallback, unsigned int *out) {
    const json *node = json_get(object, key);
    if (!node) *out = fallback;
    else if (node->type == J_BOOL) *out = node->boolean ? 1 : 0;
    else if (node->type == J_NUMBER) *out = node->number != 0;
    else return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

static const char *string_at(const json *object, const char *key) {
    const json *node = json_get(object, key);
    return node && node->type == J_STRING ? node->string : NULL;
}

static nvmlReturn_t named_at(const json *object, const char *key, const named *table, size_t count, long long *out) {
    const named *entry = find_named(table, count, string_at(object, key));
    if (!entry) return NVML_ERROR_NOT_SUPPORTED;
    *out = entry->value;
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_string(const char *value, char *buffer, unsigned int length) {
    if (!buffer) return NVML_ERROR_INVALID_ARGUMENT;
    if (!value) return NVML_ERROR_NOT_SUPPORTED;
    if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buffer, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

static unsigned long long mib_to_bytes(double mib) { return (unsigned long long)(mib * 1048576.0 + 0.5); }

/* ================================================================ init, shutdown, errors, system */

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    size_t i;
    for (i = 0; i < COUNT_OF(nvml_errors); i++)
        if (nvml_errors[i].code == result) return nvml_errors[i].text;
    return "Unknown Error";
}

API(nvmlInitWithFlags, (unsigned int flags), (flags)) {
    const char *path = getenv("FAKE_NVML_SCENARIO");
    const json *init_error;
    file_stamp stamp = {0};
    problem why;
    json *fresh;
    nvmlReturn_t code;
    size_t i;
    (void)flags; /* NO_GPUS / NO_ATTACH change nothing for a scenario */
    if (init_count) { /* reference counted: later inits only count (and pick up a changed file) */
        reload_if_changed();
        init_count++;
        return NVML_SUCCESS;
    }
    if (!path || !*path) path = DEFAULT_SCENARIO;
    if (strlen(path) >= sizeof(scenario_path)) {
        fprintf(stderr, "fake-nvml: scenario path too long: %.200s...\n", path);
        return NVML_ERROR_UNKNOWN;
    }
    fresh = load_scenario(path, &stamp, &why);
    if (!fresh) {
        fprintf(stderr, "fake-nvml: cannot use scenario %s: %s\n", path, why.message);
        return NVML_ERROR_UNKNOWN;
    }
    init_error = json_get(fresh, "init_error");
    if (init_error && init_error->type != J_NULL && init_error_code(init_error, &code) == 0) {
        json_free(fresh);
        return code;
    }
    memcpy(scenario_path, path, strlen(path) + 1);
    scenario = fresh;
    tried = stamp;
    for (i = 0; i < MAX_GPUS; i++) devices[i].index = (unsigned int)i;
    init_count = 1;
    return NVML_SUCCESS;
}

API(nvmlInit_v2, (void), ()) { return nvmlInitWithFlags_impl(0); }

/* The first nvmlInit, still exported by libnvidia-ml for old binaries. */
API(nvmlInit, (void), ()) { return nvmlInitWithFlags_impl(0); }

API(nvmlShutdown, (void), ()) {
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    if (--init_count == 0) {
        json_free(scenario);
        scenario = NULL;
        memset(&tried, 0, sizeof(tried));
    }
    return NVML_SUCCESS;
}

API(nvmlSystemGetDriverVersion, (char *version, unsigned int length), (version, length)) {
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    return copy_string(string_at(scenario, "driver_version"), version, length);
}

API(nvmlSystemGetNVMLVersion, (char *version, unsigned int length), (version, length)) {
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    return copy_string(string_at(scenario, "nvml_version"), version, length);
}

API(nvmlSystemGetCudaDriverVersion, (int *cudaDriverVersion), (cudaDriverVersion)) {
    double value;
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    if (!cudaDriverVersion) return NVML_ERROR_INVALID_ARGUMENT;
    status = number_at(scenario, "cuda_driver_version", &value);
    if (status == NVML_SUCCESS) *cudaDriverVersion = (int)value;
    return status;
}

API(nvmlSystemGetCudaDriverVersion_v2, (int *cudaDriverVersion), (cudaDriverVersion)) {
    return nvmlSystemGetCudaDriverVersion_impl(cudaDriverVersion);
}

/* ================================================================ enumeration and identity */

API(nvmlDeviceGetCount_v2, (unsigned int *deviceCount), (deviceCount)) {
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    if (!deviceCount) return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = gpu_count();
    return NVML_SUCCESS;
}

API(nvmlDeviceGetCount, (unsigned int *deviceCount), (deviceCount)) { return nvmlDeviceGetCount_v2_impl(deviceCount); }

API(nvmlDeviceGetHandleByIndex_v2, (unsigned int index, nvmlDevice_t *device), (index, device)) {
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    if (!device || index >= gpu_count()) return NVML_ERROR_INVALID_ARGUMENT;
    *device = handle_of(index);
    return NVML_SUCCESS;
}

API(nvmlDeviceGetHandleByIndex, (unsigned int index, nvmlDevice_t *device), (index, device)) {
    return nvmlDeviceGetHandleByIndex_v2_impl(index, device);
}

API(nvmlDeviceGetHandleByUUID, (const char *uuid, nvmlDevice_t *device), (uuid, device)) {
    unsigned int i;
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    if (!uuid || !device) return NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; i < gpu_count(); i++) {
        const char *declared = string_at(json_at(gpu_list(), i), "uuid");
        if (declared && !strcmp(declared, uuid)) {
            *device = handle_of(i);
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

/* Same PCI location: "00000000:21:00.0", "0000:21:00.0" and "21:00.0" all name one device. */
static int same_bus_id(const char *a, const char *b) {
    unsigned int da, ba, sa, fa, db, bb, sb, fb;
    if (parse_bus_id(a, &da, &ba, &sa, &fa) || parse_bus_id(b, &db, &bb, &sb, &fb)) return 0;
    return da == db && ba == bb && sa == sb && fa == fb;
}

API(nvmlDeviceGetHandleByPciBusId_v2, (const char *pciBusId, nvmlDevice_t *device), (pciBusId, device)) {
    unsigned int i, domain, bus, slot, function;
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    if (!pciBusId || !device || parse_bus_id(pciBusId, &domain, &bus, &slot, &function))
        return NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; i < gpu_count(); i++)
        if (same_bus_id(string_at(json_at(gpu_list(), i), "pci_bus_id"), pciBusId)) {
            *device = handle_of(i);
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND;
}

API(nvmlDeviceGetHandleByPciBusId, (const char *pciBusId, nvmlDevice_t *device), (pciBusId, device)) {
    return nvmlDeviceGetHandleByPciBusId_v2_impl(pciBusId, device);
}

API(nvmlDeviceGetIndex, (nvmlDevice_t device, unsigned int *index), (device, index)) {
    BEGIN_GPU(gpu, device, index);
    (void)gpu;
    gpu_of(device, index);
    return NVML_SUCCESS;
}

API(nvmlDeviceGetMinorNumber, (nvmlDevice_t device, unsigned int *minorNumber), (device, minorNumber)) {
    const json *node;
    BEGIN_GPU(gpu, device, minorNumber);
    node = json_get(gpu, "minor_number");
    if (!node) return gpu_of(device, minorNumber) ? NVML_SUCCESS : NVML_ERROR_UNKNOWN; /* default: the index */
    return uint_at(gpu, "minor_number", minorNumber);
}

API(nvmlDeviceGetName, (nvmlDevice_t device, char *name, unsigned int length), (device, name, length)) {
    BEGIN_GPU(gpu, device, name);
    return copy_string(string_at(gpu, "name"), name, length);
}

API(nvmlDeviceGetUUID, (nvmlDevice_t device, char *uuid, unsigned int length), (device, uuid, length)) {
    BEGIN_GPU(gpu, device, uuid);
    return copy_string(string_at(gpu, "uuid"), uuid, length);
}

API(nvmlDeviceGetBrand, (nvmlDevice_t device, nvmlBrandType_t *type), (device, type)) {
    const json *node;
    const named *brand;
    BEGIN_GPU(gpu, device, type);
    node = json_get(gpu, "brand");
    if (node && node->type == J_NUMBER) {
        *type = (nvmlBrandType_t)node->number;
        return NVML_SUCCESS;
    }
    if (!(brand = find_named(brands, COUNT_OF(brands), string_at(gpu, "brand")))) return NVML_ERROR_NOT_SUPPORTED;
    *type = (nvmlBrandType_t)brand->value;
    return NVML_SUCCESS;
}

/* ================================================================ PCI */

/* nvmlPciInfo_t as nvmlDeviceGetPciInfo and _v2 filled it, before _v3 added the 32-byte busId. */
typedef struct {
    char busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    unsigned int reserved0, reserved1, reserved2, reserved3;
} legacy_pci_info;

/* busIdLegacy: "%04X:%02X:%02X.0" in 16 bytes; a longer id (a domain above 0xFFFF, such as the
 * FFFFFFFF:FF:FF.0 NVML reports for NVSwitch ports) keeps its last 15 characters, as libnvidia-ml does. */
static void legacy_bus_id(unsigned int domain, unsigned int bus, unsigned int slot,
                          char out[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE]) {
    char full[40];
    size_t length;
    snprintf(full, sizeof(full), NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT, domain, bus & 0xFFu, slot & 0xFFu);
    length = strlen(full);
    if (length >= NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE)
        memmove(full, full + length - (NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE - 1), NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE);
    memcpy(out, full, NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE);
    out[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE - 1] = '\0';
}

static nvmlReturn_t fill_pci(const char *bus_id, unsigned int device_id, unsigned int subsystem_id, nvmlPciInfo_t *pci) {
    unsigned int domain, bus, slot, function;
    if (parse_bus_id(bus_id, &domain, &bus, &slot, &function)) return NVML_ERROR_NOT_SUPPORTED;
    memset(pci, 0, sizeof(*pci));
    snprintf(pci->busId, sizeof(pci->busId), NVML_DEVICE_PCI_BUS_ID_FMT, domain, bus, slot);
    legacy_bus_id(domain, bus, slot, pci->busIdLegacy);
    pci->domain = domain;
    pci->bus = bus;
    pci->device = slot;
    pci->pciDeviceId = device_id;
    pci->pciSubSystemId = subsystem_id;
    return NVML_SUCCESS;
}

static nvmlReturn_t gpu_pci(const json *gpu, nvmlPciInfo_t *pci) {
    unsigned int device_id = 0, subsystem_id = 0;
    uint_at(gpu, "pci_device_id", &device_id);
    uint_at(gpu, "pci_subsystem_id", &subsystem_id);
    return fill_pci(string_at(gpu, "pci_bus_id"), device_id, subsystem_id, pci);
}

static void to_legacy(const nvmlPciInfo_t *pci, legacy_pci_info *legacy) {
    memset(legacy, 0, sizeof(*legacy));
    memcpy(legacy->busId, pci->busIdLegacy, sizeof(legacy->busId));
    legacy->domain = pci->domain;
    legacy->bus = pci->bus;
    legacy->device = pci->device;
    legacy->pciDeviceId = pci->pciDeviceId;
    legacy->pciSubSystemId = pci->pciSubSystemId;
}

API(nvmlDeviceGetPciInfo_v3, (nvmlDevice_t device, nvmlPciInfo_t *pci), (device, pci)) {
    BEGIN_GPU(gpu, device, pci);
    return gpu_pci(gpu, pci);
}

/* The entry points before _v3 (declared with nvmlPciInfo_t, as nvml.h does) write the older, smaller
 * struct, whose fields sit at the same offsets as _v3's first ones: never more bytes than an old caller has. */
static nvmlReturn_t legacy_pci_info_of(nvmlDevice_t device, nvmlPciInfo_t *out) {
    nvmlPciInfo_t pci;
    legacy_pci_info legacy;
    nvmlReturn_t status;
    BEGIN_GPU(gpu, device, out);
    if ((status = gpu_pci(gpu, &pci)) != NVML_SUCCESS) return status;
    to_legacy(&pci, &legacy);
    memcpy((void *)out, &legacy, sizeof(legacy));
    return NVML_SUCCESS;
}

API(nvmlDeviceGetPciInfo_v2, (nvmlDevice_t device, nvmlPciInfo_t *pci), (device, pci)) {
    return legacy_pci_info_of(device, pci);
}

API(nvmlDeviceGetPciInfo, (nvmlDevice_t device, nvmlPciInfo_t *pci), (device, pci)) {
    return legacy_pci_info_of(device, pci);
}

API(nvmlDeviceGetPciInfoExt, (nvmlDevice_t device, nvmlPciInfoExt_t *pci), (device, pci)) {
    nvmlPciInfo_t info;
    nvmlReturn_t status;
    unsigned int base_class = 0x03, sub_class = 0x00; /* display controller, VGA */
    BEGIN_GPU(gpu, device, pci);
    if (pci->version != nvmlPciInfoExt_v1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if ((status = gpu_pci(gpu, &info)) != NVML_SUCCESS) return status;
    uint_at(gpu, "pci_base_class", &base_class);
    uint_at(gpu, "pci_sub_class", &sub_class);
    pci->domain = info.domain;
    pci->bus = info.bus;
    pci->device = info.device;
    pci->pciDeviceId = info.pciDeviceId;
    pci->pciSubSystemId = info.pciSubSystemId;
    pci->baseClass = base_class;
    pci->subClass = sub_class;
    memcpy(pci->busId, info.busId, sizeof(pci->busId));
    return NVML_SUCCESS;
}

/* A function reading one unsigned number from a section of the GPU ("pcie", "power"). */
#define UINT_READER(function, section, key)                                          \
    API(function, (nvmlDevice_t device, unsigned int *out), (device, out)) {          \
        BEGIN_GPU(gpu, device, out);                                                  \
        return uint_at(json_get(gpu, section), key, out);                             \
    }

UINT_READER(nvmlDeviceGetCurrPcieLinkGeneration, "pcie", "current_gen")
UINT_READER(nvmlDeviceGetMaxPcieLinkGeneration, "pcie", "max_gen")
UINT_READER(nvmlDeviceGetCurrPcieLinkWidth, "pcie", "current_width")
UINT_READER(nvmlDeviceGetMaxPcieLinkWidth, "pcie", "max_width")

/* The GPU's own maximum; without "gpu_max_gen" the same as the system-limited "max_gen". */
API(nvmlDeviceGetGpuMaxPcieLinkGeneration, (nvmlDevice_t device, unsigned int *maxLinkGenDevice),
    (device, maxLinkGenDevice)) {
    const json *pcie;
    BEGIN_GPU(gpu, device, maxLinkGenDevice);
    pcie = json_get(gpu, "pcie");
    return uint_at(pcie, json_get(pcie, "gpu_max_gen") ? "gpu_max_gen" : "max_gen", maxLinkGenDevice);
}

/* ================================================================ memory and persistence */

static nvmlReturn_t memory_of(const json *gpu, unsigned long long *total, unsigned long long *reserved,
                              unsigned long long *used) {
    double total_mib, reserved_mib = 0, used_mib = 0;
    if (number_at(gpu, "memory_total_mib", &total_mib) != NVML_SUCCESS) return NVML_ERROR_NOT_SUPPORTED;
    number_at(gpu, "memory_reserved_mib", &reserved_mib);
    number_at(gpu, "memory_used_mib", &used_mib);
    *total = mib_to_bytes(total_mib);
    *reserved = mib_to_bytes(reserved_mib);
    *used = mib_to_bytes(used_mib);
    return NVML_SUCCESS;
}

static unsigned long long left_over(unsigned long long total, unsigned long long taken) {
    return taken > total ? 0 : total - taken;
}

API(nvmlDeviceGetMemoryInfo, (nvmlDevice_t device, nvmlMemory_t *memory), (device, memory)) {
    unsigned long long total, reserved, used;
    nvmlReturn_t status;
    BEGIN_GPU(gpu, device, memory);
    if ((status = memory_of(gpu, &total, &reserved, &used)) != NVML_SUCCESS) return status;
    memory->total = total;
    memory->used = used + reserved; /* v1 "used" is reserved plus allocated */
    memory->free = left_over(total, used + reserved);
    return NVML_SUCCESS;
}

API(nvmlDeviceGetMemoryInfo_v2, (nvmlDevice_t device, nvmlMemory_v2_t *memory), (device, memory)) {
    unsigned long long total, reserved, used;
    nvmlReturn_t status;
    BEGIN_GPU(gpu, device, memory);
    /* libnvidia-ml 580 answers FUNCTION_NOT_FOUND (not ARGUMENT_VERSION_MISMATCH) for another version. */
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_FUNCTION_NOT_FOUND;
    if ((status = memory_of(gpu, &total, &reserved, &used)) != NVML_SUCCESS) return status;
    memory->total = total;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = left_over(total, used + reserved);
    return NVML_SUCCESS;
}

API(nvmlDeviceGetPersistenceMode, (nvmlDevice_t device, nvmlEnableState_t *mode), (device, mode)) {
    const json *node;
    BEGIN_GPU(gpu, device, mode);
    node = json_get(gpu, "persistence_mode");
    if (!node || node->type != J_BOOL) return NVML_ERROR_NOT_SUPPORTED;
    *mode = node->boolean ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    return NVML_SUCCESS;
}

/* ================================================================ power and fans */

UINT_READER(nvmlDeviceGetPowerUsage, "power", "usage_mw")
UINT_READER(nvmlDeviceGetPowerManagementDefaultLimit, "power", "default_limit_mw")

/* Power limits set through nvmlDeviceSetPowerManagementLimit live in a state file, one line per GPU
 * ("<key> <milliwatts>", the key being the GPU's UUID, else its bus id), so a limit set by one process is
 * what the next one reads, as with the real driver. The default path is under /run, a tmpfs: the limit is
 * gone after a reboot, as a real card's is. $FAKE_NVML_STATE overrides the path (tests outside a target). */
#define POWER_STATE_DEFAULT "/run/fake-nvml/power_limits"

static const char *power_state_path(void) {
    const char *path = getenv("FAKE_NVML_STATE");
    return path && *path ? path : POWER_STATE_DEFAULT;
}

static const char *gpu_state_key(const json *gpu) {
    const char *key = string_at(gpu, "uuid");
    return key ? key : string_at(gpu, "pci_bus_id");
}

/* The limit set for this GPU, in milliwatts; 0 when none was set (or the file cannot be read). */
static unsigned int stored_power_limit(const json *gpu) {
    const char *key = gpu_state_key(gpu);
    char line[256], name[200];
    unsigned int value, found = 0;
    FILE *file;
    if (!key || !(file = fopen(power_state_path(), "r"))) return 0;
    while (fgets(line, sizeof(line), file))
        if (sscanf(line, "%199s %u", name, &value) == 2 && !strcmp(name, key)) found = value;
    fclose(file);
    return found;
}

/* Replace this GPU's line in the state file (written to a temporary file, then renamed over it). */
static nvmlReturn_t store_power_limit(const json *gpu, unsigned int limit) {
    const char *key = gpu_state_key(gpu), *path = power_state_path();
    char temporary[4200], directory[4096], line[256], name[200];
    unsigned int value;
    FILE *old, *fresh;
    char *slash;
    if (!key) return NVML_ERROR_UNKNOWN;
    snprintf(directory, sizeof(directory), "%s", path);
    slash = strrchr(directory, '/');
    if (slash && slash != directory) {
        *slash = '\0';
        mkdir(directory, 0755); /* EEXIST is fine; a real failure shows at fopen */
    }
    snprintf(temporary, sizeof(temporary), "%s.%ld", path, (long)getpid());
    if (!(fresh = fopen(temporary, "w"))) {
        fprintf(stderr, "fake-nvml: cannot write %s: %s\n", temporary, strerror(errno));
        return NVML_ERROR_UNKNOWN;
    }
    if ((old = fopen(path, "r"))) {
        while (fgets(line, sizeof(line), old))
            if (sscanf(line, "%199s %u", name, &value) == 2 && strcmp(name, key)) fprintf(fresh, "%s %u\n", name, value);
        fclose(old);
    }
    fprintf(fresh, "%s %u\n", key, limit);
    if (fclose(fresh) != 0 || rename(temporary, path) != 0) {
        fprintf(stderr, "fake-nvml: cannot write %s: %s\n", path, strerror(errno));
        remove(temporary);
        return NVML_ERROR_UNKNOWN;
    }
    return NVML_SUCCESS;
}

/* The enforced limit: the one set through NVML if any, else the scenario's. */
API(nvmlDeviceGetEnforcedPowerLimit, (nvmlDevice_t device, unsigned int *limit), (device, limit)) {
    nvmlReturn_t status;
    unsigned int stored;
    BEGIN_GPU(gpu, device, limit);
    status = uint_at(json_get(gpu, "power"), "enforced_limit_mw", limit);
    if (status == NVML_SUCCESS && (stored = stored_power_limit(gpu)) != 0) *limit = stored;
    return status;
}

/* The limit set by management software: the one set through NVML if any, else "limit_mw", else the
 * enforced limit. */
API(nvmlDeviceGetPowerManagementLimit, (nvmlDevice_t device, unsigned int *limit), (device, limit)) {
    const json *power;
    nvmlReturn_t status;
    unsigned int stored;
    BEGIN_GPU(gpu, device, limit);
    power = json_get(gpu, "power");
    status = uint_at(power, json_get(power, "limit_mw") ? "limit_mw" : "enforced_limit_mw", limit);
    if (status == NVML_SUCCESS && (stored = stored_power_limit(gpu)) != 0) *limit = stored;
    return status;
}

/* As the real driver: NOT_SUPPORTED where the card has no settable limit (no constraints, or the scenario's
 * "settable": false), NO_PERMISSION for a caller other than root, INVALID_ARGUMENT outside the constraints. */
API(nvmlDeviceSetPowerManagementLimit, (nvmlDevice_t device, unsigned int limit), (device, limit)) {
    const json *gpu, *power, *settable;
    unsigned int low, high;
    nvmlReturn_t begun = begin();
    if (begun != NVML_SUCCESS) return begun;
    if (!(gpu = gpu_of(device, NULL))) return NVML_ERROR_INVALID_ARGUMENT;
    power = json_get(gpu, "power");
    settable = json_get(power, "settable");
    if ((settable && settable->type == J_BOOL && !settable->boolean) ||
        uint_at(power, "min_limit_mw", &low) != NVML_SUCCESS || uint_at(power, "max_limit_mw", &high) != NVML_SUCCESS)
        return NVML_ERROR_NOT_SUPPORTED;
    if (geteuid() != 0) return NVML_ERROR_NO_PERMISSION;
    if (limit < low || limit > high) return NVML_ERROR_INVALID_ARGUMENT;
    return store_power_limit(gpu, limit);
}

API(nvmlDeviceGetPowerManagementLimitConstraints, (nvmlDevice_t device, unsigned int *minLimit, unsigned int *maxLimit),
    (device, minLimit, maxLimit)) {
    const json *power;
    unsigned int low, high;
    BEGIN_GPU(gpu, device, minLimit);
    if (!maxLimit) return NVML_ERROR_INVALID_ARGUMENT;
    power = json_get(gpu, "power");
    if (uint_at(power, "min_limit_mw", &low) != NVML_SUCCESS || uint_at(power, "max_limit_mw", &high) != NVML_SUCCESS)
        return NVML_ERROR_NOT_SUPPORTED;
    *minLimit = low;
    *maxLimit = high;
    return NVML_SUCCESS;
}

static nvmlReturn_t fan_count(const json *gpu, unsigned int *count) {
    const json *node = json_get(gpu, "num_fans");
    if (!node) { /* default: one fan if the GPU reports a fan speed */
        const json *speed = json_get(gpu, "fan_speed_pct");
        if (!speed || speed->type != J_NUMBER) return NVML_ERROR_NOT_SUPPORTED;
        *count = 1;
        return NVML_SUCCESS;
    }
    return uint_at(gpu, "num_fans", count);
}

API(nvmlDeviceGetFanSpeed, (nvmlDevice_t device, unsigned int *speed), (device, speed)) {
    BEGIN_GPU(gpu, device, speed);
    return uint_at(gpu, "fan_speed_pct", speed);
}

API(nvmlDeviceGetFanSpeed_v2, (nvmlDevice_t device, unsigned int fan, unsigned int *speed), (device, fan, speed)) {
    unsigned int fans;
    BEGIN_GPU(gpu, device, speed);
    /* A fan the GPU does not have is INVALID_ARGUMENT even where no fan speed is readable (H200: 0 fans). */
    if (fan_count(gpu, &fans) == NVML_SUCCESS && fan >= fans) return NVML_ERROR_INVALID_ARGUMENT;
    return uint_at(gpu, "fan_speed_pct", speed);
}

API(nvmlDeviceGetNumFans, (nvmlDevice_t device, unsigned int *numFans), (device, numFans)) {
    BEGIN_GPU(gpu, device, numFans);
    return fan_count(gpu, numFans);
}

/* ================================================================ thermal */

static nvmlReturn_t sensor_reading(const json *gpu, nvmlTemperatureSensors_t sensor, unsigned int *temp) {
    if ((unsigned int)sensor >= NVML_TEMPERATURE_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    return uint_at(json_get(gpu, "temperature"), sensor_keys[sensor], temp);
}

API(nvmlDeviceGetTemperature, (nvmlDevice_t device, nvmlTemperatureSensors_t sensorType, unsigned int *temp),
    (device, sensorType, temp)) {
    BEGIN_GPU(gpu, device, temp);
    return sensor_reading(gpu, sensorType, temp);
}

API(nvmlDeviceGetTemperatureV, (nvmlDevice_t device, nvmlTemperature_t *temperature), (device, temperature)) {
    unsigned int reading;
    nvmlReturn_t status;
    BEGIN_GPU(gpu, device, temperature);
    if (temperature->version != nvmlTemperature_v1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if ((status = sensor_reading(gpu, temperature->sensorType, &reading)) == NVML_SUCCESS)
        temperature->temperature = (int)reading;
    return status;
}

API(nvmlDeviceGetTemperatureThreshold, (nvmlDevice_t device, nvmlTemperatureThresholds_t thresholdType,
                                        unsigned int *temp),
    (device, thresholdType, temp)) {
    BEGIN_GPU(gpu, device, temp);
    if ((unsigned int)thresholdType >= NVML_TEMPERATURE_THRESHOLD_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    return uint_at(json_get(gpu, "temperature"), threshold_keys[thresholdType], temp);
}

/* The link an NVML_FI_DEV_NVLINK_{CRC_FLIT,CRC_DATA,REPLAY,RECOVERY}_ERROR_COUNT_L0..L11 field is about, and
 * its counter; -1 for any other field. nvml.h numbers links 0-5 and 6-11 of each counter in two runs. */
static int error_field_link(unsigned int field_id, nvmlNvLinkErrorCounter_t *counter) {
    static const struct {
        unsigned int first_low, first_high;
        nvmlNvLinkErrorCounter_t counter;
    } runs[] = {
        {NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L0, NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L6,
         NVML_NVLINK_ERROR_DL_CRC_FLIT},
        {NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_L0, NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_L6,
         NVML_NVLINK_ERROR_DL_CRC_DATA},
        {NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L0, NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L6,
         NVML_NVLINK_ERROR_DL_REPLAY},
        {NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_L0, NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_L6,
         NVML_NVLINK_ERROR_DL_RECOVERY},
    };
    size_t i;
    for (i = 0; i < COUNT_OF(runs); i++) {
        *counter = runs[i].counter;
        if (field_id >= runs[i].first_low && field_id < runs[i].first_low + 6)
            return (int)(field_id - runs[i].first_low);
        if (field_id >= runs[i].first_high && field_id < runs[i].first_high + 6)
            return 6 + (int)(field_id - runs[i].first_high);
    }
    return -1;
}

/* One field from the scenario's "field_values" (which wins), else from the structured keys. A field id
 * nvml.h does not define (0, or NVML_FI_MAX and above) is INVALID_ARGUMENT in that field, one it defines but
 * the scenario does not give is NOT_SUPPORTED, as libnvidia-ml answers. */
static void read_field(const json *gpu, nvmlFieldValue_t *field) {
    char id[16];
    const json *declared, *temperature = json_get(gpu, "temperature"), *nvlink = json_get(gpu, "nvlink");
    double value;
    memset(&field->value, 0, sizeof(field->value));
    field->valueType = NVML_VALUE_TYPE_DOUBLE; /* what a failed field carries */
    field->nvmlReturn = field->fieldId == 0 || field->fieldId >= NVML_FI_MAX ? NVML_ERROR_INVALID_ARGUMENT
                                                                              : NVML_ERROR_NOT_SUPPORTED;
    snprintf(id, sizeof(id), "%u", field->fieldId);
    declared = json_get(json_get(gpu, "field_values"), id);
    if (declared) {
        if (declared->type != J_NUMBER) return; /* null: NOT_SUPPORTED */
        value = declared->number;
        field->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        if (!declared->integral) {
            field->valueType = NVML_VALUE_TYPE_DOUBLE;
            field->value.dVal = value;
        } else if (value < 0) {
            field->valueType = NVML_VALUE_TYPE_SIGNED_LONG_LONG;
            field->value.sllVal = (long long)value;
        } else if (value > UINT_MAX) {
            field->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            field->value.ullVal = (unsigned long long)value;
        } else {
            field->value.uiVal = (unsigned int)value;
        }
        field->nvmlReturn = NVML_SUCCESS;
        return;
    }
    switch (field->fieldId) {
    case NVML_FI_DEV_MEMORY_TEMP:
        if (number_at(temperature, "memory_c", &value) != NVML_SUCCESS) return;
        field->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        field->value.uiVal = (unsigned int)value;
        break;
    case NVML_FI_DEV_GPU_TEMP:
        if (number_at(temperature, "gpu_c", &value) != NVML_SUCCESS) return;
        field->valueType = NVML_VALUE_TYPE_DOUBLE;
        field->value.dVal = value;
        break;
    case NVML_FI_DEV_NVLINK_LINK_COUNT:
        if (!nvlink || nvlink->type != J_OBJECT) return;
        field->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        field->value.uiVal = (unsigned int)json_length(json_get(nvlink, "links"));
        break;
    default: {
        /* A link's error counter, as nvmlDeviceGetNvLinkErrorCounter reads it from the link's "errors"; NOT_SUPPORTED
         * without NVLink, past the GPU's last link, or for a counter the scenario leaves out. */
        nvmlNvLinkErrorCounter_t counter;
        int link = error_field_link(field->fieldId, &counter);
        const json *entry;
        if (link < 0 || !nvlink || nvlink->type != J_OBJECT) return;
        entry = json_at(json_get(nvlink, "links"), (size_t)link);
        if (!entry || number_at(json_get(entry, "errors"), error_counter_keys[counter], &value) != NVML_SUCCESS) return;
        field->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
        field->value.ullVal = (unsigned long long)value;
        break;
    }
    }
    field->nvmlReturn = NVML_SUCCESS;
}

API(nvmlDeviceGetFieldValues, (nvmlDevice_t device, int valuesCount, nvmlFieldValue_t *values),
    (device, valuesCount, values)) {
    struct timespec now;
    long long stamp;
    int i;
    BEGIN_GPU(gpu, device, values);
    if (valuesCount <= 0) return NVML_ERROR_INVALID_ARGUMENT; /* libnvidia-ml refuses 0 too */
    clock_gettime(CLOCK_REALTIME, &now);
    stamp = (long long)now.tv_sec * 1000000LL + now.tv_nsec / 1000;
    for (i = 0; i < valuesCount; i++) {
        values[i].timestamp = stamp;
        values[i].latencyUsec = 0;
        read_field(gpu, &values[i]);
    }
    return NVML_SUCCESS; /* the call succeeds; each field carries its own nvmlReturn */
}

API(nvmlDeviceGetCurrentClocksEventReasons, (nvmlDevice_t device, unsigned long long *clocksEventReasons),
    (device, clocksEventReasons)) {
    const json *reasons, *name;
    unsigned long long mask = 0;
    BEGIN_GPU(gpu, device, clocksEventReasons);
    reasons = json_get(gpu, "clocks_event_reasons");
    if (!reasons || (reasons->type != J_ARRAY && reasons->type != J_NUMBER)) return NVML_ERROR_NOT_SUPPORTED;
    if (reasons->type == J_NUMBER) mask = (unsigned long long)reasons->number;
    for (name = reasons->type == J_ARRAY ? reasons->child : NULL; name; name = name->next) {
        const named *reason = find_named(clock_event_reasons, COUNT_OF(clock_event_reasons), name->string);
        if (reason) mask |= (unsigned long long)reason->value;
    }
    *clocksEventReasons = mask;
    return NVML_SUCCESS;
}

/* The name before driver 535; same answer. */
API(nvmlDeviceGetCurrentClocksThrottleReasons, (nvmlDevice_t device, unsigned long long *clocksThrottleReasons),
    (device, clocksThrottleReasons)) {
    return nvmlDeviceGetCurrentClocksEventReasons_impl(device, clocksThrottleReasons);
}

/* ================================================================ NVLink */

/* The link object for (device, link): NOT_SUPPORTED on a GPU without NVLink, INVALID_ARGUMENT past its last
 * link, as real NVML answers. */
static nvmlReturn_t link_of(nvmlDevice_t device, unsigned int link, const void *out, const json **entry) {
    const json *gpu, *nvlink, *links;
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    if (!(gpu = gpu_of(device, NULL)) || !out) return NVML_ERROR_INVALID_ARGUMENT;
    nvlink = json_get(gpu, "nvlink");
    if (!nvlink || nvlink->type != J_OBJECT) return NVML_ERROR_NOT_SUPPORTED;
    links = json_get(nvlink, "links");
    if (link >= json_length(links)) return NVML_ERROR_INVALID_ARGUMENT;
    *entry = json_at(links, link);
    return NVML_SUCCESS;
}

#define BEGIN_LINK(entry, device, link, out)                                                  \
    const json *entry = NULL;                                                                 \
    do {                                                                                      \
        nvmlReturn_t linked_ = link_of(device, link, out, &entry);                            \
        if (linked_ != NVML_SUCCESS) return linked_;                                          \
    } while (0)

API(nvmlDeviceGetNvLinkState, (nvmlDevice_t device, unsigned int link, nvmlEnableState_t *isActive),
    (device, link, isActive)) {
    long long state;
    BEGIN_LINK(entry, device, link, isActive);
    if (named_at(entry, "state", link_states, COUNT_OF(link_states), &state) != NVML_SUCCESS)
        return NVML_ERROR_UNKNOWN; /* unreachable: "state" is required */
    *isActive = (nvmlEnableState_t)state;
    return NVML_SUCCESS;
}

API(nvmlDeviceGetNvLinkVersion, (nvmlDevice_t device, unsigned int link, unsigned int *version),
    (device, link, version)) {
    BEGIN_LINK(entry, device, link, version);
    return uint_at(entry, "version", version);
}

/* The device at the far end of a link: its bus id, and its PCI device id when the scenario has it (given,
 * or the GPU of the scenario at that bus id). */
static nvmlReturn_t remote_pci(const json *entry, nvmlPciInfo_t *pci) {
    const char *bus_id = string_at(entry, "remote_pci_bus_id");
    unsigned int device_id = 0, subsystem_id = 0, i;
    if (!bus_id) return NVML_ERROR_NOT_SUPPORTED;
    if (uint_at(entry, "remote_pci_device_id", &device_id) != NVML_SUCCESS)
        for (i = 0; i < gpu_count(); i++) {
            const json *other = json_at(gpu_list(), i);
            if (same_bus_id(string_at(other, "pci_bus_id"), bus_id)) {
                uint_at(other, "pci_device_id", &device_id);
                uint_at(other, "pci_subsystem_id", &subsystem_id);
                break;
            }
        }
    return fill_pci(bus_id, device_id, subsystem_id, pci);
}

API(nvmlDeviceGetNvLinkRemotePciInfo_v2, (nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci),
    (device, link, pci)) {
    BEGIN_LINK(entry, device, link, pci);
    return remote_pci(entry, pci);
}

/* The entry point before _v2: the older, smaller struct, as for nvmlDeviceGetPciInfo. */
API(nvmlDeviceGetNvLinkRemotePciInfo, (nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci),
    (device, link, pci)) {
    nvmlPciInfo_t info;
    legacy_pci_info legacy;
    nvmlReturn_t status;
    BEGIN_LINK(entry, device, link, pci);
    if ((status = remote_pci(entry, &info)) != NVML_SUCCESS) return status;
    to_legacy(&info, &legacy);
    memcpy((void *)pci, &legacy, sizeof(legacy));
    return NVML_SUCCESS;
}

API(nvmlDeviceGetNvLinkRemoteDeviceType, (nvmlDevice_t device, unsigned int link,
                                          nvmlIntNvLinkDeviceType_t *pNvLinkDeviceType),
    (device, link, pNvLinkDeviceType)) {
    long long type;
    nvmlReturn_t status;
    BEGIN_LINK(entry, device, link, pNvLinkDeviceType);
    status = named_at(entry, "remote_device_type", remote_device_types, COUNT_OF(remote_device_types), &type);
    if (status == NVML_SUCCESS) *pNvLinkDeviceType = (nvmlIntNvLinkDeviceType_t)type;
    return status;
}

API(nvmlDeviceGetNvLinkCapability, (nvmlDevice_t device, unsigned int link, nvmlNvLinkCapability_t capability,
                                    unsigned int *capResult),
    (device, link, capability, capResult)) {
    BEGIN_LINK(entry, device, link, capResult);
    if ((unsigned int)capability >= NVML_NVLINK_CAP_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    return flag_at(entry, link_capabilities[capability].name, (unsigned int)link_capabilities[capability].value,
                   capResult);
}

API(nvmlDeviceGetNvLinkErrorCounter, (nvmlDevice_t device, unsigned int link, nvmlNvLinkErrorCounter_t counter,
                                      unsigned long long *counterValue),
    (device, link, counter, counterValue)) {
    double value;
    nvmlReturn_t status;
    BEGIN_LINK(entry, device, link, counterValue);
    if ((unsigned int)counter >= NVML_NVLINK_ERROR_COUNT) return NVML_ERROR_NOT_SUPPORTED; /* as libnvidia-ml */
    status = number_at(json_get(entry, "errors"), error_counter_keys[counter], &value);
    if (status == NVML_SUCCESS) *counterValue = (unsigned long long)value;
    return status;
}

/* ================================================================ GPU pairs */

/* The scenario's "pairs" entry for two GPUs: "i-j" as asked, else "j-i". */
static const json *pair_of(unsigned int first, unsigned int second) {
    char key[32];
    const json *pairs = json_get(scenario, "pairs"), *pair;
    snprintf(key, sizeof(key), "%u-%u", first, second);
    if ((pair = json_get(pairs, key))) return pair;
    snprintf(key, sizeof(key), "%u-%u", second, first);
    return json_get(pairs, key);
}

API(nvmlDeviceGetP2PStatus, (nvmlDevice_t device1, nvmlDevice_t device2, nvmlGpuP2PCapsIndex_t p2pIndex,
                             nvmlGpuP2PStatus_t *p2pStatus),
    (device1, device2, p2pIndex, p2pStatus)) {
    unsigned int first, second;
    size_t i;
    const json *p2p;
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    if (!gpu_of(device1, &first) || !gpu_of(device2, &second) || !p2pStatus) return NVML_ERROR_INVALID_ARGUMENT;
    /* libnvidia-ml answers SUCCESS without writing for an index past the last one it knows. */
    if ((unsigned int)p2pIndex >= NVML_P2P_CAPS_INDEX_UNKNOWN) return NVML_SUCCESS;
    *p2pStatus = NVML_P2P_STATUS_NOT_SUPPORTED; /* a pair or capability the scenario does not name */
    p2p = json_get(pair_of(first, second), "p2p");
    for (i = 0; i < COUNT_OF(p2p_caps); i++) {
        const named *declared;
        if (p2p_caps[i].value != (long long)p2pIndex) continue;
        declared = find_named(p2p_statuses, COUNT_OF(p2p_statuses), string_at(p2p, p2p_caps[i].name));
        if (declared) *p2pStatus = (nvmlGpuP2PStatus_t)declared->value;
    }
    return NVML_SUCCESS;
}

API(nvmlDeviceGetTopologyCommonAncestor, (nvmlDevice_t device1, nvmlDevice_t device2, nvmlGpuTopologyLevel_t *pathInfo),
    (device1, device2, pathInfo)) {
    unsigned int first, second;
    long long level;
    nvmlReturn_t status = begin();
    if (status != NVML_SUCCESS) return status;
    if (!gpu_of(device1, &first) || !gpu_of(device2, &second) || !pathInfo) return NVML_ERROR_INVALID_ARGUMENT;
    if (first == second) return NVML_ERROR_NOT_SUPPORTED; /* as libnvidia-ml answers for one GPU with itself */
    status = named_at(pair_of(first, second), "topology", topology_levels, COUNT_OF(topology_levels), &level);
    if (status == NVML_SUCCESS) *pathInfo = (nvmlGpuTopologyLevel_t)level;
    return status;
}
