/*
 * Checks Strimzi custom resources (Kafka, KafkaNodePool, KafkaTopic) against Strimzi's own model, offline.
 *
 *   java -cp "$(cat classpath)" k8s/check/StrimziCheck.java [--each] FILE.yaml...
 *
 * The classpath comes from k8s/check/pom.xml (mvn dependency:build-classpath). Documents of other API groups are
 * skipped (kubernetes-validate checks those). Each Strimzi document must be kafka.strimzi.io/v1 and is read with
 * Jackson YAML into the class the Strimzi operator reads it into (io.strimzi:api), then:
 *
 *  - unknown properties fail. The model classes keep unknown properties in a map (@JsonAnySetter) instead of
 *    failing, so FAIL_ON_UNKNOWN_PROPERTIES alone never fires: every object's additionalProperties must be empty;
 *  - wrong types fail (no string-to-number or number-to-string coercion), as do unknown enum values and types;
 *  - the CRD generator's annotations on each property are enforced for the v1 API: @PresentInVersions (a property
 *    only v1beta2 has, e.g. Kafka.spec.kafka.replicas, fails), @RequiredInVersions, @Minimum, @Maximum, @Pattern,
 *    @MinimumItems, @DeprecatedProperty (a new deployment uses none), and Jackson's required=true; a type with
 *    @OneOf or @CelValidation fails until this checker enforces them (none of the types used here has either).
 *    Those annotation classes are not published with io.strimzi:api (crd-generator is a build-only module), so
 *    reflection cannot see them: they are read from the class files;
 *  - Kafka settings are checked with Apache Kafka's own definitions: broker settings in spec.kafka.config against
 *    the broker's ConfigDef (and Strimzi's forbidden prefixes), topic settings in KafkaTopic spec.config against
 *    LogConfig (names, types, validators);
 *  - across the documents checked together: each node pool and topic names a Kafka in the set, each Kafka has
 *    controller and broker nodes, a topic has no more replicas than brokers and min.insync.replicas <= replicas.
 *
 * With --each, every file is checked on its own and reported as OK or FAIL (the negative tests use it).
 * Exit status: 0 when every checked set is valid, 1 otherwise, 2 on bad usage.
 */

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.MapperFeature;
import com.fasterxml.jackson.databind.MappingIterator;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.cfg.CoercionAction;
import com.fasterxml.jackson.databind.cfg.CoercionInputShape;
import com.fasterxml.jackson.databind.introspect.AnnotatedMember;
import com.fasterxml.jackson.databind.introspect.BeanPropertyDefinition;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.type.LogicalType;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import io.strimzi.api.kafka.model.kafka.Kafka;
import io.strimzi.api.kafka.model.kafka.KafkaClusterSpec;
import io.strimzi.api.kafka.model.nodepool.KafkaNodePool;
import io.strimzi.api.kafka.model.nodepool.ProcessRoles;
import io.strimzi.api.kafka.model.topic.KafkaTopic;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.server.config.AbstractKafkaConfig;
import org.apache.kafka.storage.internals.log.LogConfig;

import java.io.DataInputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class StrimziCheck {
    static final String GROUP = "kafka.strimzi.io";
    static final String API_VERSION = GROUP + "/v1";
    static final String CHECKED_VERSION = "v1";
    static final Map<String, Class<?>> KINDS = Map.of(
            "Kafka", Kafka.class, "KafkaNodePool", KafkaNodePool.class, "KafkaTopic", KafkaTopic.class);
    static final String ANNOTATIONS = "io.strimzi.crdgenerator.annotations.";
    static final Pattern DNS_SUBDOMAIN = Pattern.compile("[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*");
    static final Pattern KAFKA_TOPIC_NAME = Pattern.compile("[a-zA-Z0-9._-]{1,249}");
    static final String CLUSTER_LABEL = "strimzi.io/cluster";

    static final ObjectMapper MAPPER = mapper();

    /** One Strimzi document that was read, with where it came from. */
    record Doc(String where, String kind, String name, JsonNode tree, Object model) {}

    /** One annotation read from a class file: its type name and its element values. */
    record Ann(String type, Map<String, Object> values) {
        Object value() {
            return values.get("value");
        }
    }

    public static void main(String[] args) throws IOException {
        boolean each = false;
        List<File> files = new ArrayList<>();
        for (String arg : args) {
            if (arg.equals("--each")) {
                each = true;
            } else if (arg.startsWith("-")) {
                System.err.println("unknown option " + arg);
                System.exit(2);
            } else {
                files.add(new File(arg));
            }
        }
        if (files.isEmpty()) {
            System.err.println("usage: java -cp <classpath> StrimziCheck.java [--each] FILE.yaml...");
            System.exit(2);
        }
        boolean ok = true;
        if (each) {
            for (File file : files) {
                ok &= report(file.getPath(), checkSet(List.of(file)));
            }
        } else {
            ok = report(files.size() + " file(s)", checkSet(files));
        }
        System.exit(ok ? 0 : 1);
    }

    static boolean report(String what, Result result) {
        if (result.errors.isEmpty()) {
            System.out.println("OK " + what + ": " + result.checked + " Strimzi document(s) valid for " + API_VERSION
                    + ", " + result.skipped + " other document(s) skipped");
            return true;
        }
        System.out.println("FAIL " + what + ":");
        for (String error : result.errors) {
            System.out.println("  " + error);
        }
        return false;
    }

    static final class Result {
        final List<String> errors = new ArrayList<>();
        int checked;
        int skipped;
    }

    static ObjectMapper mapper() {
        ObjectMapper mapper = JsonMapper.builder(new YAMLFactory())
                .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
                .enable(DeserializationFeature.FAIL_ON_NUMBERS_FOR_ENUMS)
                .enable(DeserializationFeature.FAIL_ON_READING_DUP_TREE_KEY)
                .disable(MapperFeature.ALLOW_COERCION_OF_SCALARS)
                .build();
        // The CRD's OpenAPI schema types are strict: "8" is not an integer and 8 is not a string.
        for (LogicalType type : List.of(LogicalType.Integer, LogicalType.Float, LogicalType.Boolean)) {
            mapper.coercionConfigFor(type).setCoercion(CoercionInputShape.String, CoercionAction.Fail);
        }
        for (CoercionInputShape shape : List.of(CoercionInputShape.Integer, CoercionInputShape.Float, CoercionInputShape.Boolean)) {
            mapper.coercionConfigFor(LogicalType.Textual).setCoercion(shape, CoercionAction.Fail);
        }
        return mapper;
    }

    static Result checkSet(List<File> files) throws IOException {
        Result result = new Result();
        List<Doc> docs = new ArrayList<>();
        for (File file : files) {
            int index = 0;
            try (MappingIterator<JsonNode> it = MAPPER.readerFor(JsonNode.class).readValues(file)) {
                while (it.hasNext()) {
                    JsonNode tree = it.next();
                    index++;
                    if (tree == null || tree.isNull() || tree.isMissingNode()) {
                        continue;
                    }
                    String where = file.getPath() + " #" + index;
                    String apiVersion = tree.path("apiVersion").asText("");
                    if (!apiVersion.startsWith(GROUP + "/")) {
                        result.skipped++;
                        continue;
                    }
                    result.checked++;
                    Doc doc = readDoc(where, tree, result.errors);
                    if (doc != null) {
                        docs.add(doc);
                    }
                }
            } catch (JsonMappingException e) {
                result.errors.add(file.getPath() + ": not valid YAML: " + e.getOriginalMessage());
            }
        }
        checkAcross(docs, result.errors);
        return result;
    }

    static Doc readDoc(String where, JsonNode tree, List<String> errors) {
        String kind = tree.path("kind").asText("");
        String name = tree.path("metadata").path("name").asText("");
        String label = where + " " + kind + "/" + name;
        String apiVersion = tree.path("apiVersion").asText("");
        if (!apiVersion.equals(API_VERSION)) {
            errors.add(label + ": apiVersion is " + apiVersion + ", not " + API_VERSION);
            return null;
        }
        Class<?> type = KINDS.get(kind);
        if (type == null) {
            errors.add(label + ": kind " + kind + " is not one this checker knows (" + KINDS.keySet() + ")");
            return null;
        }
        if (!DNS_SUBDOMAIN.matcher(name).matches() || name.length() > 253) {
            errors.add(label + ": metadata.name must be a DNS subdomain (lower case, digits, '-', '.')");
        }
        Object model;
        try {
            model = MAPPER.treeToValue(tree, type);
        } catch (JsonMappingException e) {
            errors.add(label + ": " + pathOf(e) + ": " + e.getOriginalMessage());
            return null;
        } catch (IOException e) {
            errors.add(label + ": " + e.getMessage());
            return null;
        }
        List<String> found = new ArrayList<>();
        walk(model, tree, "", found);
        for (String error : found) {
            errors.add(label + ": " + error);
        }
        Doc doc = new Doc(where, kind, name, tree, model);
        if (model instanceof Kafka kafka) {
            checkBrokerConfig(kafka, label, errors);
        } else if (model instanceof KafkaTopic topic) {
            checkTopic(topic, label, errors);
        }
        return doc;
    }

    static String pathOf(JsonMappingException e) {
        StringBuilder path = new StringBuilder();
        for (JsonMappingException.Reference ref : e.getPath()) {
            if (ref.getFieldName() != null) {
                path.append('.').append(ref.getFieldName());
            } else if (ref.getIndex() >= 0) {
                path.append('[').append(ref.getIndex()).append(']');
            }
        }
        return path.length() == 0 ? "(document)" : path.substring(path.charAt(0) == '.' ? 1 : 0);
    }

    // ---- walking the model: unknown properties and the CRD generator's constraints ----

    static void walk(Object value, JsonNode node, String path, List<String> errors) {
        if (value == null || value instanceof String || value instanceof Number || value instanceof Boolean
                || value instanceof Enum<?>) {
            return;
        }
        if (value instanceof Map<?, ?> map) {
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                String key = String.valueOf(entry.getKey());
                walkChild(entry.getValue(), child(node, key), join(path, key), errors);
            }
            return;
        }
        if (value instanceof Collection<?> items) {
            int i = 0;
            for (Object item : items) {
                walkChild(item, node == null ? null : node.get(i), path + "[" + i + "]", errors);
                i++;
            }
            return;
        }
        Class<?> type = value.getClass();
        if (!type.getName().startsWith("io.strimzi.") && !type.getName().startsWith("io.fabric8.")) {
            return;
        }
        List<Ann> onType = annotationsOf(type).get("type");
        Ann present = find(onType, "PresentInVersions");
        if (present != null && !inRange(CHECKED_VERSION, (String) present.value())) {
            errors.add(where(path) + ": " + type.getSimpleName() + " is not part of " + API_VERSION);
        }
        for (String unsupported : List.of("OneOf", "CelValidation")) {
            if (find(onType, unsupported) != null) {
                errors.add(where(path) + ": " + type.getSimpleName() + " carries @" + unsupported
                        + ", which this checker does not enforce yet: extend StrimziCheck.java before using it");
            }
        }
        Object extra = additionalProperties(value);
        if (extra instanceof Map<?, ?> unknown) {
            for (Object key : unknown.keySet()) {
                errors.add(join(path, String.valueOf(key)) + ": unknown property");
            }
        }
        for (BeanPropertyDefinition property : MAPPER.getSerializationConfig()
                .introspect(MAPPER.constructType(type)).findProperties()) {
            AnnotatedMember getter = property.getGetter();
            if (getter == null || property.getName().equals("additionalProperties")) {
                continue;
            }
            Object child = getter.getValue(value);
            String childPath = join(path, property.getName());
            List<Ann> anns = propertyAnnotations(getter, property);
            checkProperty(child, child(node, property.getName()), childPath, property, anns, errors);
            walk(child, child(node, property.getName()), childPath, errors);
        }
    }

    /** An element of a list or map: a value written in the YAML that the model read as null was not accepted. */
    static void walkChild(Object value, JsonNode node, String path, List<String> errors) {
        if (value == null && node != null && !node.isNull()) {
            errors.add(path + ": " + node + " is not a value the model accepts");
        }
        walk(value, node, path, errors);
    }

    static JsonNode child(JsonNode node, String name) {
        return node == null ? null : node.get(name);
    }

    static void checkProperty(Object value, JsonNode node, String path, BeanPropertyDefinition property,
                              List<Ann> anns, List<String> errors) {
        Ann required = find(anns, "RequiredInVersions");
        boolean isRequired = property.isRequired()
                || (required != null && inRange(CHECKED_VERSION, (String) required.value()));
        if (value == null) {
            if (node != null && !node.isNull()) {
                // e.g. an enum's forValue() answers null for a name it does not know
                errors.add(path + ": " + node + " is not a value the model accepts");
            } else if (isRequired) {
                errors.add(path + ": required in " + API_VERSION + " but missing");
            }
            return;
        }
        Ann present = find(anns, "PresentInVersions");
        if (present != null && !inRange(CHECKED_VERSION, (String) present.value())) {
            errors.add(path + ": not part of " + API_VERSION + " (present only in " + present.value() + ")");
        }
        for (Ann ann : anns) {
            if (ann.type().equals("io.strimzi.api.annotations.DeprecatedProperty")) {
                errors.add(path + ": deprecated" + (ann.values().containsKey("description")
                        ? " (" + ann.values().get("description") + ")" : ""));
            }
        }
        for (Ann ann : anns) {
            if (!appliesTo(ann)) {
                continue;
            }
            String simple = ann.type().substring(ann.type().lastIndexOf('.') + 1);
            switch (simple) {
                case "Minimum" -> {
                    if (value instanceof Number n && n.doubleValue() < ((Number) ann.value()).doubleValue()) {
                        errors.add(path + ": " + n + " is below the minimum " + ann.value());
                    }
                }
                case "Maximum" -> {
                    if (value instanceof Number n && n.doubleValue() > ((Number) ann.value()).doubleValue()) {
                        errors.add(path + ": " + n + " is above the maximum " + ann.value());
                    }
                }
                case "Pattern" -> {
                    if (!Pattern.compile((String) ann.value()).matcher(String.valueOf(value)).find()) {
                        errors.add(path + ": \"" + value + "\" does not match " + ann.value());
                    }
                }
                case "MinimumItems" -> {
                    if (value instanceof Collection<?> c && c.size() < ((Number) ann.value()).intValue()) {
                        errors.add(path + ": " + c.size() + " item(s), at least " + ann.value() + " needed");
                    }
                }
                default -> { }
            }
        }
    }

    static boolean appliesTo(Ann ann) {
        Object versions = ann.values().get("apiVersions");
        return versions == null || inRange(CHECKED_VERSION, (String) versions);
    }

    static Object additionalProperties(Object value) {
        try {
            Method method = value.getClass().getMethod("getAdditionalProperties");
            return method.invoke(value);
        } catch (NoSuchMethodException e) {
            return null;
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }

    static String join(String path, String name) {
        return path.isEmpty() ? name : path + "." + name;
    }

    static String where(String path) {
        return path.isEmpty() ? "(document)" : path;
    }

    static Ann find(List<Ann> anns, String simpleName) {
        if (anns == null) {
            return null;
        }
        for (Ann ann : anns) {
            if (ann.type().equals(ANNOTATIONS + simpleName)) {
                return ann;
            }
        }
        return null;
    }

    /** The CRD generator's annotations on a property: its getter's and its field's, repeatable lists unpacked. */
    static List<Ann> propertyAnnotations(AnnotatedMember getter, BeanPropertyDefinition property) {
        List<Ann> result = new ArrayList<>();
        if (getter.getMember() instanceof Method method) {
            Map<String, List<Ann>> byMember = annotationsOf(method.getDeclaringClass());
            result.addAll(byMember.getOrDefault("m:" + method.getName() + methodDescriptor(method), List.of()));
            String field = property.getInternalName();
            for (Class<?> c = method.getDeclaringClass(); c != null && c != Object.class; c = c.getSuperclass()) {
                List<Ann> onField = annotationsOf(c).get("f:" + field);
                if (onField != null) {
                    result.addAll(onField);
                    break;
                }
            }
        }
        List<Ann> unpacked = new ArrayList<>();
        for (Ann ann : result) {
            if (ann.type().endsWith("$List") && ann.value() instanceof List<?> inner) {
                for (Object item : inner) {
                    unpacked.add((Ann) item);
                }
            } else {
                unpacked.add(ann);
            }
        }
        return unpacked;
    }

    static String methodDescriptor(Method method) {
        StringBuilder d = new StringBuilder("(");
        for (Class<?> p : method.getParameterTypes()) {
            d.append(descriptor(p));
        }
        return d.append(')').append(descriptor(method.getReturnType())).toString();
    }

    static String descriptor(Class<?> c) {
        if (c.isArray()) {
            return "[" + descriptor(c.getComponentType());
        }
        if (c.isPrimitive()) {
            return switch (c.getName()) {
                case "int" -> "I";
                case "long" -> "J";
                case "boolean" -> "Z";
                case "double" -> "D";
                case "float" -> "F";
                case "short" -> "S";
                case "byte" -> "B";
                case "char" -> "C";
                default -> "V";
            };
        }
        return "L" + c.getName().replace('.', '/') + ";";
    }

    // ---- reading RuntimeVisibleAnnotations from class files (the annotation classes are not on the classpath) ----

    static final Map<Class<?>, Map<String, List<Ann>>> CLASS_ANNOTATIONS = new HashMap<>();

    static Map<String, List<Ann>> annotationsOf(Class<?> type) {
        return CLASS_ANNOTATIONS.computeIfAbsent(type, StrimziCheck::readAnnotations);
    }

    static Map<String, List<Ann>> readAnnotations(Class<?> type) {
        String resource = type.getName().replace('.', '/') + ".class";
        ClassLoader loader = type.getClassLoader() != null ? type.getClassLoader() : ClassLoader.getSystemClassLoader();
        try (InputStream raw = loader.getResourceAsStream(resource)) {
            if (raw == null) {
                return Map.of();
            }
            return new ClassFile(new DataInputStream(raw)).read();
        } catch (IOException e) {
            throw new IllegalStateException("cannot read " + resource, e);
        }
    }

    /** Just enough of the class file format (JVMS chapter 4) to read the annotations of a class and its members. */
    static final class ClassFile {
        final DataInputStream in;
        Object[] pool;

        ClassFile(DataInputStream in) {
            this.in = in;
        }

        Map<String, List<Ann>> read() throws IOException {
            if (in.readInt() != 0xCAFEBABE) {
                throw new IOException("not a class file");
            }
            in.readUnsignedShort();
            in.readUnsignedShort();
            readPool();
            in.readUnsignedShort(); // access flags
            in.readUnsignedShort(); // this class
            in.readUnsignedShort(); // super class
            int interfaces = in.readUnsignedShort();
            for (int i = 0; i < interfaces; i++) {
                in.readUnsignedShort();
            }
            Map<String, List<Ann>> result = new HashMap<>();
            for (String prefix : List.of("f:", "m:")) {
                int members = in.readUnsignedShort();
                for (int i = 0; i < members; i++) {
                    in.readUnsignedShort();
                    String name = utf(in.readUnsignedShort());
                    String descriptor = utf(in.readUnsignedShort());
                    List<Ann> anns = readAttributes();
                    if (!anns.isEmpty()) {
                        result.put(prefix.equals("f:") ? "f:" + name : "m:" + name + descriptor, anns);
                    }
                }
            }
            List<Ann> onType = readAttributes();
            if (!onType.isEmpty()) {
                result.put("type", onType);
            }
            return result;
        }

        void readPool() throws IOException {
            int count = in.readUnsignedShort();
            pool = new Object[count];
            for (int i = 1; i < count; i++) {
                int tag = in.readUnsignedByte();
                switch (tag) {
                    case 1 -> pool[i] = in.readUTF();
                    case 3 -> pool[i] = in.readInt();
                    case 4 -> pool[i] = in.readFloat();
                    case 5 -> {
                        pool[i] = in.readLong();
                        i++;
                    }
                    case 6 -> {
                        pool[i] = in.readDouble();
                        i++;
                    }
                    case 7, 8, 16, 19, 20 -> in.readUnsignedShort();
                    case 9, 10, 11, 12, 17, 18 -> in.readInt();
                    case 15 -> {
                        in.readUnsignedByte();
                        in.readUnsignedShort();
                    }
                    default -> throw new IOException("unknown constant pool tag " + tag);
                }
            }
        }

        String utf(int index) {
            return (String) pool[index];
        }

        List<Ann> readAttributes() throws IOException {
            List<Ann> anns = new ArrayList<>();
            int count = in.readUnsignedShort();
            for (int i = 0; i < count; i++) {
                String name = utf(in.readUnsignedShort());
                int length = in.readInt();
                if (name.equals("RuntimeVisibleAnnotations")) {
                    int n = in.readUnsignedShort();
                    for (int j = 0; j < n; j++) {
                        anns.add(readAnnotation());
                    }
                } else {
                    in.skipNBytes(length);
                }
            }
            return anns;
        }

        Ann readAnnotation() throws IOException {
            String descriptor = utf(in.readUnsignedShort());
            String type = descriptor.substring(1, descriptor.length() - 1).replace('/', '.');
            Map<String, Object> values = new LinkedHashMap<>();
            int pairs = in.readUnsignedShort();
            for (int i = 0; i < pairs; i++) {
                String name = utf(in.readUnsignedShort());
                values.put(name, readElement());
            }
            return new Ann(type, values);
        }

        Object readElement() throws IOException {
            int tag = in.readUnsignedByte();
            switch (tag) {
                case 'B', 'C', 'I', 'S', 'D', 'F', 'J', 's', 'c' -> {
                    return pool[in.readUnsignedShort()];
                }
                case 'Z' -> {
                    return ((Integer) pool[in.readUnsignedShort()]) != 0;
                }
                case 'e' -> {
                    in.readUnsignedShort();
                    return utf(in.readUnsignedShort());
                }
                case '@' -> {
                    return readAnnotation();
                }
                case '[' -> {
                    int n = in.readUnsignedShort();
                    List<Object> items = new ArrayList<>();
                    for (int i = 0; i < n; i++) {
                        items.add(readElement());
                    }
                    return items;
                }
                default -> throw new IOException("unknown annotation element tag " + (char) tag);
            }
        }
    }

    // ---- Strimzi API version ranges ("all", "empty", "v1", "v1beta2+", "v1alpha1-v1beta2") ----

    static final Pattern VERSION = Pattern.compile("v([0-9]+)(?:(alpha|beta)([0-9]+))?");

    static int[] version(String v) {
        Matcher m = VERSION.matcher(v);
        if (!m.matches()) {
            throw new IllegalArgumentException("not an API version: " + v);
        }
        int stability = m.group(2) == null ? 2 : m.group(2).equals("beta") ? 1 : 0;
        return new int[] {Integer.parseInt(m.group(1)), stability, m.group(3) == null ? 0 : Integer.parseInt(m.group(3))};
    }

    static int compare(String a, String b) {
        return java.util.Arrays.compare(version(a), version(b));
    }

    static boolean inRange(String v, String range) {
        if (range.equals("all")) {
            return true;
        }
        if (range.equals("empty")) {
            return false;
        }
        if (VERSION.matcher(range).matches()) {
            return compare(v, range) == 0;
        }
        if (range.endsWith("+")) {
            return compare(v, range.substring(0, range.length() - 1)) >= 0;
        }
        int dash = range.indexOf('-');
        if (dash > 0) {
            return compare(v, range.substring(0, dash)) >= 0 && compare(v, range.substring(dash + 1)) <= 0;
        }
        throw new IllegalArgumentException("not an API version range: " + range);
    }

    // ---- Kafka's own settings ----

    static void checkBrokerConfig(Kafka kafka, String label, List<String> errors) {
        if (kafka.getSpec() == null || kafka.getSpec().getKafka() == null) {
            return;
        }
        Map<String, Object> config = kafka.getSpec().getKafka().getConfig();
        if (config == null) {
            return;
        }
        List<String> forbidden = splitList(KafkaClusterSpec.FORBIDDEN_PREFIXES);
        List<String> exceptions = splitList(KafkaClusterSpec.FORBIDDEN_PREFIX_EXCEPTIONS);
        for (Map.Entry<String, Object> entry : config.entrySet()) {
            String key = entry.getKey();
            String path = "spec.kafka.config." + key;
            if (!exceptions.contains(key) && forbidden.stream().anyMatch(key::startsWith)) {
                errors.add(label + ": " + path + ": Strimzi manages this setting (forbidden prefix)");
                continue;
            }
            ConfigDef.ConfigKey def = AbstractKafkaConfig.CONFIG_DEF.configKeys().get(key);
            if (def == null) {
                errors.add(label + ": " + path + ": not a Kafka broker setting");
                continue;
            }
            checkValue(def, entry.getValue(), label + ": " + path, errors);
        }
    }

    static void checkTopic(KafkaTopic topic, String label, List<String> errors) {
        String name = topicName(topic);
        if (!KAFKA_TOPIC_NAME.matcher(name).matches() || name.equals(".") || name.equals("..")) {
            errors.add(label + ": topic name \"" + name + "\" is not a legal Kafka topic name");
        }
        if (topic.getSpec() == null || topic.getSpec().getConfig() == null) {
            return;
        }
        Map<String, ConfigDef.ConfigKey> keys = LogConfig.configKeys();
        for (Map.Entry<String, Object> entry : topic.getSpec().getConfig().entrySet()) {
            String path = label + ": spec.config." + entry.getKey();
            ConfigDef.ConfigKey def = keys.get(entry.getKey());
            if (def == null) {
                errors.add(path + ": not a Kafka topic setting");
                continue;
            }
            checkValue(def, entry.getValue(), path, errors);
        }
    }

    static void checkValue(ConfigDef.ConfigKey def, Object value, String where, List<String> errors) {
        try {
            // Strimzi hands every setting to Kafka as text, as a properties file would.
            Object parsed = ConfigDef.parseType(def.name, String.valueOf(value), def.type);
            if (def.validator != null) {
                def.validator.ensureValid(def.name, parsed);
            }
        } catch (RuntimeException e) {
            errors.add(where + ": " + e.getMessage());
        }
    }

    static List<String> splitList(String list) {
        List<String> items = new ArrayList<>();
        for (String item : list.split(",")) {
            if (!item.isBlank()) {
                items.add(item.trim());
            }
        }
        return items;
    }

    static String topicName(KafkaTopic topic) {
        String name = topic.getSpec() == null ? null : topic.getSpec().getTopicName();
        return name != null ? name : topic.getMetadata().getName();
    }

    // ---- across documents ----

    static void checkAcross(List<Doc> docs, List<String> errors) {
        Map<String, Doc> seen = new HashMap<>();
        Map<String, Kafka> clusters = new HashMap<>();
        Map<String, Integer> brokers = new HashMap<>();
        Map<String, Integer> controllers = new HashMap<>();
        Map<String, String> topicNames = new HashMap<>();
        for (Doc doc : docs) {
            String key = doc.kind() + "/" + namespace(doc) + "/" + doc.name();
            Doc before = seen.put(key, doc);
            if (before != null) {
                errors.add(doc.where() + " " + doc.kind() + "/" + doc.name() + ": defined twice (also " + before.where() + ")");
            }
            if (doc.model() instanceof Kafka kafka) {
                clusters.put(namespace(doc) + "/" + doc.name(), kafka);
            }
        }
        for (Doc doc : docs) {
            String label = doc.where() + " " + doc.kind() + "/" + doc.name();
            if (doc.kind().equals("Kafka")) {
                continue;
            }
            Map<String, String> labels = ((io.fabric8.kubernetes.api.model.HasMetadata) doc.model()).getMetadata().getLabels();
            String cluster = labels == null ? null : labels.get(CLUSTER_LABEL);
            String clusterKey = namespace(doc) + "/" + cluster;
            if (cluster == null || !clusters.containsKey(clusterKey)) {
                errors.add(label + ": label " + CLUSTER_LABEL + "=" + cluster + " names no Kafka in namespace "
                        + namespace(doc) + " among the documents checked");
                continue;
            }
            if (doc.model() instanceof KafkaNodePool pool && pool.getSpec() != null) {
                int replicas = pool.getSpec().getReplicas();
                List<ProcessRoles> roles = Objects.requireNonNullElse(pool.getSpec().getRoles(), List.of());
                if (roles.contains(ProcessRoles.BROKER)) {
                    brokers.merge(clusterKey, replicas, Integer::sum);
                }
                if (roles.contains(ProcessRoles.CONTROLLER)) {
                    controllers.merge(clusterKey, replicas, Integer::sum);
                }
            }
            if (doc.model() instanceof KafkaTopic topic) {
                String name = clusterKey + "/" + topicName(topic);
                String before = topicNames.put(name, label);
                if (before != null) {
                    errors.add(label + ": topic " + topicName(topic) + " is also declared by " + before);
                }
            }
        }
        for (String cluster : clusters.keySet()) {
            if (brokers.getOrDefault(cluster, 0) < 1 || controllers.getOrDefault(cluster, 0) < 1) {
                errors.add("Kafka " + cluster + ": needs node pools with broker and controller roles (KRaft), has "
                        + brokers.getOrDefault(cluster, 0) + " broker(s), " + controllers.getOrDefault(cluster, 0)
                        + " controller(s)");
            }
        }
        for (Doc doc : docs) {
            if (!(doc.model() instanceof KafkaTopic topic) || topic.getSpec() == null) {
                continue;
            }
            String label = doc.where() + " " + doc.kind() + "/" + doc.name();
            Map<String, String> labels = topic.getMetadata().getLabels();
            String cluster = namespace(doc) + "/" + (labels == null ? null : labels.get(CLUSTER_LABEL));
            Integer replicas = topic.getSpec().getReplicas();
            int available = brokers.getOrDefault(cluster, 0);
            if (replicas != null && replicas > available) {
                errors.add(label + ": " + replicas + " replicas but the cluster has " + available + " broker(s)");
            }
            Object minIsr = topic.getSpec().getConfig() == null ? null : topic.getSpec().getConfig().get("min.insync.replicas");
            if (replicas != null && minIsr != null && Integer.parseInt(String.valueOf(minIsr)) > replicas) {
                errors.add(label + ": min.insync.replicas " + minIsr + " exceeds its " + replicas + " replicas");
            }
        }
    }

    static String namespace(Doc doc) {
        String ns = doc.tree().path("metadata").path("namespace").asText("");
        return ns.isEmpty() ? "(default)" : ns;
    }
}
