package org.anyam.collaborator;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.Signature;
import java.security.spec.PKCS8EncodedKeySpec;
import java.time.Duration;
import java.time.OffsetDateTime;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.erdtman.jcs.JsonCanonicalizer;

/**
 * A collaborator's QC client (docs/collaborators.md): reads the {@code data} of a {@code qc-submitted}
 * event (JSON on stdin), signs it, and submits it to Anyam's production service over Kafka or HTTP.
 *
 * <pre>
 *   QcClient sign  --key KEY.pem                         &lt; data.json   prints the signed data
 *   QcClient kafka --key KEY.pem --credentials FILE      &lt; data.json   publishes to qc-submissions
 *   QcClient http  --key KEY.pem --credentials FILE [--idempotency-key K] &lt; data.json
 * </pre>
 *
 * <p>With {@code --as-signed} instead of {@code --key}, {@code kafka} and {@code http} send data that was
 * signed before (e.g. by {@code sign} on another machine) exactly as given. FILE is the credentials file
 * {@code anyam collaborator onboard} writes ({@code KEY=value} lines). What happened is printed as one JSON
 * line on stdout; exit 0 when the submission was taken, 1 when the service refused it, 2 on any other
 * failure (one line on stderr saying what to do).
 */
public final class QcClient {
    static final String TOPIC = "qc-submissions";
    static final String CONTENT_TYPE = "application/cloudevents+json";
    /** The contract version of {@code qc-submitted} this client writes: defects and inspector are codes. */
    static final int DATAVERSION = 2;

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final ZoneId WIB = ZoneId.of("Asia/Jakarta");

    private QcClient() {}

    /** A failure the user can act on: one line on stderr, exit 2. */
    static final class Failure extends Exception {
        Failure(String message) {
            super(message);
        }
    }

    public static void main(String[] args) {
        try {
            System.exit(run(args));
        } catch (Failure failure) {
            System.err.println("error: " + failure.getMessage());
            System.exit(2);
        }
    }

    static int run(String[] argv) throws Failure {
        if (argv.length == 0) {
            throw new Failure("usage: QcClient sign|kafka|http [--key KEY.pem | --as-signed] "
                    + "[--credentials FILE] [--idempotency-key K] < data.json");
        }
        String command = argv[0];
        Map<String, String> options = new LinkedHashMap<>();
        for (int i = 1; i < argv.length; i++) {
            switch (argv[i]) {
                case "--as-signed" -> options.put("as-signed", "true");
                case "--key", "--credentials", "--idempotency-key" -> {
                    if (i + 1 >= argv.length) {
                        throw new Failure(argv[i] + " needs a value");
                    }
                    options.put(argv[i].substring(2), argv[++i]);
                }
                default -> throw new Failure("unknown argument " + argv[i]);
            }
        }
        ObjectNode data = readData();
        if (options.containsKey("as-signed")) {
            if (!data.path("signature").isTextual()) {
                throw new Failure("--as-signed: the data on stdin has no `signature`; sign it first (`sign`)");
            }
        } else {
            if (!options.containsKey("key")) {
                throw new Failure("pass --key KEY.pem (the collaborator's Ed25519 private key, PKCS#8 PEM)");
            }
            data = signed(loadKey(Path.of(options.get("key"))), data);
        }
        switch (command) {
            case "sign" -> {
                System.out.println(data.toString());
                return 0;
            }
            case "kafka" -> {
                return sendKafka(credentials(options, data), data);
            }
            case "http" -> {
                return sendHttp(credentials(options, data), data, options.get("idempotency-key"));
            }
            default -> throw new Failure("unknown command " + command + "; use sign, kafka or http");
        }
    }

    // --- signing (SPEC §6) -------------------------------------------------------------------------

    /** The bytes a signature covers: RFC 8785 canonical JSON of {@code data} without {@code signature}. */
    static byte[] canonicalBytes(ObjectNode data) throws Failure {
        ObjectNode unsigned = data.deepCopy();
        unsigned.remove("signature");
        try {
            return new JsonCanonicalizer(JSON.writeValueAsString(unsigned)).getEncodedUTF8();
        } catch (IOException e) {
            throw new Failure("the data has no RFC 8785 canonical form: " + e.getMessage());
        }
    }

    /** A copy of {@code data} with its {@code signature}: Ed25519 over the canonical bytes, base64. */
    static ObjectNode signed(PrivateKey key, ObjectNode data) throws Failure {
        try {
            Signature ed25519 = Signature.getInstance("Ed25519");
            ed25519.initSign(key);
            ed25519.update(canonicalBytes(data));
            ObjectNode copy = data.deepCopy();
            copy.put("signature", Base64.getEncoder().encodeToString(ed25519.sign()));
            return copy;
        } catch (GeneralSecurityException e) {
            throw new Failure("cannot sign with this key: " + e.getMessage());
        }
    }

    /** The Ed25519 private key in an unencrypted PKCS#8 PEM file (what `anyam collaborator keygen` writes). */
    static PrivateKey loadKey(Path path) throws Failure {
        String pem;
        try {
            pem = Files.readString(path, StandardCharsets.US_ASCII);
        } catch (NoSuchFileException e) {
            throw new Failure("no key file " + path);
        } catch (IOException e) {
            throw new Failure("cannot read " + path + ": " + e.getMessage());
        }
        String begin = "-----BEGIN PRIVATE KEY-----";
        String end = "-----END PRIVATE KEY-----";
        int from = pem.indexOf(begin);
        int to = pem.indexOf(end);
        if (from < 0 || to < from) {
            throw new Failure(path + " is not an unencrypted PKCS#8 PEM private key (BEGIN PRIVATE KEY)");
        }
        try {
            byte[] der = Base64.getMimeDecoder().decode(pem.substring(from + begin.length(), to));
            return KeyFactory.getInstance("Ed25519").generatePrivate(new PKCS8EncodedKeySpec(der));
        } catch (IllegalArgumentException | GeneralSecurityException e) {
            throw new Failure(path + " holds no Ed25519 private key: " + e.getMessage());
        }
    }

    // --- the envelope (SPEC §5) --------------------------------------------------------------------

    /** The {@code qc-submitted} CloudEvent around signed {@code data}, as UTF-8 JSON. */
    static byte[] cloudEvent(ObjectNode data) throws Failure {
        ObjectNode event = JSON.createObjectNode();
        event.put("specversion", "1.0");
        event.put("id", UUID.randomUUID().toString());
        event.put("source", "/collaborators/" + text(data, "collaborator_id"));
        event.put("type", "qc-submitted");
        event.put("subject", text(data, "piece_id"));
        event.put("time", OffsetDateTime.now(WIB).truncatedTo(ChronoUnit.MILLIS)
                .format(DateTimeFormatter.ISO_OFFSET_DATE_TIME));
        event.put("datacontenttype", "application/json");
        event.put("dataversion", DATAVERSION);
        event.set("data", data);
        return event.toString().getBytes(StandardCharsets.UTF_8);
    }

    // --- Kafka -------------------------------------------------------------------------------------

    static int sendKafka(Map<String, String> credentials, ObjectNode data) throws Failure {
        String bootstrap = required(credentials, "ANYAM_KAFKA_BOOTSTRAP");
        String topic = credentials.getOrDefault("ANYAM_TOPIC_PREFIX", "") + TOPIC;
        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        config.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        config.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        String protocol = credentials.getOrDefault("ANYAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT");
        config.put("security.protocol", protocol);
        if (protocol.startsWith("SASL")) {
            String mechanism = required(credentials, "ANYAM_KAFKA_SASL_MECHANISM");
            String module = mechanism.equals("PLAIN")
                    ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                    : "org.apache.kafka.common.security.scram.ScramLoginModule";
            config.put("sasl.mechanism", mechanism);
            config.put("sasl.jaas.config", module + " required username=\""
                    + jaasQuoted(required(credentials, "ANYAM_KAFKA_SASL_USERNAME")) + "\" password=\""
                    + jaasQuoted(required(credentials, "ANYAM_KAFKA_SASL_PASSWORD")) + "\";");
        }
        String pieceId = text(data, "piece_id");
        ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(
                topic, null, pieceId.getBytes(StandardCharsets.UTF_8), cloudEvent(data));
        record.headers().add("content-type", CONTENT_TYPE.getBytes(StandardCharsets.UTF_8));
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(config, new ByteArraySerializer(), new ByteArraySerializer())) {
            RecordMetadata sent = producer.send(record).get(60, TimeUnit.SECONDS);
            ObjectNode out = JSON.createObjectNode();
            out.put("transport", "kafka");
            out.put("topic", sent.topic());
            out.put("partition", sent.partition());
            out.put("offset", sent.offset());
            out.put("submission_id", text(data, "submission_id"));
            out.put("piece_id", pieceId);
            System.out.println(out);
            return 0;
        } catch (ExecutionException e) {
            Throwable cause = e.getCause() == null ? e : e.getCause();
            throw new Failure("publishing to " + topic + " at " + bootstrap + " failed: " + cause);
        } catch (TimeoutException e) {
            throw new Failure("the broker at " + bootstrap + " did not take the submission within 60 s");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new Failure("interrupted");
        } catch (org.apache.kafka.common.KafkaException e) {
            throw new Failure("publishing to " + topic + " at " + bootstrap + " failed: " + e);
        }
    }

    private static String jaasQuoted(String value) {
        return value.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    // --- HTTP --------------------------------------------------------------------------------------

    static int sendHttp(Map<String, String> credentials, ObjectNode data, String idempotencyKey) throws Failure {
        String base = required(credentials, "ANYAM_PRODUCTION_URL").replaceAll("/+$", "");
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(base + "/qc-submissions"))
                .timeout(Duration.ofSeconds(60))
                .header("Authorization", "Bearer " + required(credentials, "ANYAM_COLLABORATOR_TOKEN"))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(data.toString(), StandardCharsets.UTF_8));
        // A retry with the same key gets the first answer and changes nothing (SPEC §9).
        request.header("Idempotency-Key", idempotencyKey != null ? idempotencyKey : text(data, "submission_id"));
        HttpResponse<String> response;
        try {
            // HTTP/1.1: java.net.http's default (HTTP/2) asks a plain-http server for an h2c upgrade on
            // the POST itself, which servers such as uvicorn answer 400 instead of ignoring.
            response = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build().send(request.build(),
                    HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new Failure("POST " + base + "/qc-submissions failed: " + e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new Failure("interrupted");
        }
        ObjectNode out = JSON.createObjectNode();
        out.put("transport", "http");
        out.put("status", response.statusCode());
        try {
            out.set("response", JSON.readTree(response.body()));
        } catch (IOException e) {
            out.put("response", response.body());
        }
        System.out.println(out);
        return response.statusCode() < 300 ? 0 : 1;
    }

    // --- inputs ------------------------------------------------------------------------------------

    static ObjectNode readData() throws Failure {
        JsonNode node;
        try {
            node = JSON.readTree(new String(System.in.readAllBytes(), StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new Failure("stdin is not JSON: " + e.getMessage());
        }
        if (node == null || !node.isObject()) {
            throw new Failure("stdin must hold one JSON object: the QC result's data");
        }
        List<String> missing = new ArrayList<>();
        for (String field : List.of("submission_id", "piece_id", "collaborator_id", "result", "inspector",
                "inspected_at", "defects")) {
            if (!node.has(field)) {
                missing.add(field);
            }
        }
        if (!missing.isEmpty()) {
            throw new Failure("the data lacks " + String.join(", ", missing));
        }
        return (ObjectNode) node;
    }

    /** The credentials file's values; the data must be for the collaborator the file is. */
    static Map<String, String> credentials(Map<String, String> options, ObjectNode data) throws Failure {
        if (!options.containsKey("credentials")) {
            throw new Failure("pass --credentials FILE (the file `anyam collaborator onboard` wrote)");
        }
        Path path = Path.of(options.get("credentials"));
        Map<String, String> values = new LinkedHashMap<>();
        List<String> lines;
        try {
            lines = Files.readAllLines(path, StandardCharsets.UTF_8);
        } catch (NoSuchFileException e) {
            throw new Failure("no credentials file " + path);
        } catch (IOException e) {
            throw new Failure("cannot read " + path + ": " + e.getMessage());
        }
        for (int number = 1; number <= lines.size(); number++) {
            String line = lines.get(number - 1).strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            int eq = line.indexOf('=');
            if (eq <= 0) {
                throw new Failure(path + ":" + number + " is not a KEY=value line");
            }
            values.put(line.substring(0, eq).strip(), line.substring(eq + 1).strip());
        }
        String mine = values.get("ANYAM_COLLABORATOR_ID");
        if (mine != null && !mine.equals(text(data, "collaborator_id"))) {
            throw new Failure("the data is for collaborator " + text(data, "collaborator_id") + ", but " + path
                    + " holds the credentials of " + mine);
        }
        return values;
    }

    private static String required(Map<String, String> values, String key) throws Failure {
        String value = values.get(key);
        if (value == null || value.isEmpty()) {
            throw new Failure("the credentials file has no " + key);
        }
        return value;
    }

    private static String text(ObjectNode data, String field) throws Failure {
        JsonNode value = data.get(field);
        if (value == null || !value.isTextual()) {
            throw new Failure("`" + field + "` must be a string");
        }
        return value.asText();
    }
}
