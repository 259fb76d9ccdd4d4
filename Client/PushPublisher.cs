using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace OrleansPush.Client;

/// <summary>Options of a <see cref="PushPublisher"/>.</summary>
public sealed class PushPublisherOptions
{
    public const int DefaultMaxAttempts = 4;
    public static readonly TimeSpan DefaultRetryBaseDelay = TimeSpan.FromMilliseconds(200);
    public static readonly TimeSpan DefaultRetryMaxDelay = TimeSpan.FromSeconds(5);

    /// <summary>Called before each request; its token is sent as <c>Authorization: Bearer</c>.</summary>
    public Func<CancellationToken, ValueTask<string?>>? AccessTokenProvider { get; set; }

    /// <summary>Attempts per publish, the first included; retries happen only on failures that may be transient (no
    /// answer, 408, 429, 5xx) and always with the same idempotency key.</summary>
    public int MaxAttempts { get; set; } = DefaultMaxAttempts;

    public TimeSpan RetryBaseDelay { get; set; } = DefaultRetryBaseDelay;

    public TimeSpan RetryMaxDelay { get; set; } = DefaultRetryMaxDelay;
}

/// <summary>One item of a batch. <see cref="Json"/> is one UTF-8 JSON value.</summary>
public sealed record PublishItem(string Topic, ReadOnlyMemory<byte> Json, string? IdempotencyKey = null)
{
    public static PublishItem Create<T>(string topic, T data, string? idempotencyKey = null) =>
        new(topic, JsonSerializer.SerializeToUtf8Bytes(data), idempotencyKey);
}

/// <summary>The answer for one batch item: its position, or why it was refused.</summary>
public sealed record PublishResult(string Topic, PushPosition? Position, PushException? Error)
{
    public bool Succeeded => Position is not null;
}

/// <summary>
/// Publishes through a gateway's HTTP API (<c>POST /api/topics/{topic}</c>, <c>/api/users/{id}</c>, <c>/api/publish</c>),
/// for backends. <para>Guarantee: every publish carries an idempotency key (one is made up when none is given) and a
/// retry reuses it, so a publish retried within the gateway's dedupe window is delivered once and answers the first
/// publish's position. An answer means the message is sequenced (durably, where durable storage is configured).</para>
/// </summary>
public sealed class PushPublisher
{
    private const string IdempotencyHeader = "Idempotency-Key";
    private readonly HttpClient _http;
    private readonly PushPublisherOptions _options;

    /// <param name="http">A client whose <see cref="HttpClient.BaseAddress"/> is a gateway (e.g. <c>http://gateway:5000/</c>).</param>
    public PushPublisher(HttpClient http, PushPublisherOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(http);
        _http = http;
        _options = options ?? new PushPublisherOptions();
        if (_options.MaxAttempts < 1)
        {
            throw new ArgumentException("PushPublisherOptions.MaxAttempts must be at least 1.", nameof(options));
        }
    }

    /// <summary>Publishes <paramref name="data"/> (serialised as JSON) to a topic.</summary>
    /// <exception cref="PushException">Refused (<c>bad_topic</c>, <c>too_large</c>, <c>forbidden</c>, ...), or still failing after the retries (<c>unavailable</c>).</exception>
    public Task<PushPosition> PublishAsync<T>(string topic, T data, string? idempotencyKey = null, CancellationToken cancellationToken = default) =>
        PublishJsonAsync(topic, JsonSerializer.SerializeToUtf8Bytes(data), idempotencyKey, cancellationToken);

    /// <summary>Publishes raw JSON (one UTF-8 JSON value) to a topic.</summary>
    public Task<PushPosition> PublishJsonAsync(string topic, ReadOnlyMemory<byte> json, string? idempotencyKey = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        return PostOneAsync("api/topics/" + topic, json, idempotencyKey, cancellationToken);
    }

    /// <summary>Publishes <paramref name="bytes"/> as a binary message (any bytes; sent as <c>application/octet-stream</c>).
    /// JSON subscribers get them base64-encoded in <c>data_b64</c>, MQTT subscribers as they are.</summary>
    public Task<PushPosition> PublishBytesAsync(string topic, ReadOnlyMemory<byte> bytes, string? idempotencyKey = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        return PostOneAsync("api/topics/" + topic, bytes, idempotencyKey, cancellationToken, OctetStream);
    }

    /// <summary>Pushes <paramref name="data"/> to one user's personal channel (<c>user:{userId}</c>).</summary>
    public Task<PushPosition> PushToUserAsync<T>(string userId, T data, string? idempotencyKey = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(userId);
        return PostOneAsync("api/users/" + Uri.EscapeDataString(userId), JsonSerializer.SerializeToUtf8Bytes(data), idempotencyKey, cancellationToken);
    }

    /// <summary>Publishes a batch in one request. Items of one topic are sequenced in the order given. Each item gets
    /// its own result; a refused item does not sink the rest. Items without a key get one, so retrying the whole batch
    /// is safe.</summary>
    public async Task<IReadOnlyList<PublishResult>> PublishBatchAsync(IEnumerable<PublishItem> items, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(items);
        var list = items.ToList();
        using var body = new MemoryStream();
        await using (var w = new Utf8JsonWriter(body))
        {
            w.WriteStartArray();
            foreach (var item in list)
            {
                w.WriteStartObject();
                w.WriteString("topic", item.Topic);
                w.WritePropertyName("data");
                w.WriteRawValue(item.Json.Span);
                w.WriteString("key", item.IdempotencyKey ?? NewKey());
                w.WriteEndObject();
            }

            w.WriteEndArray();
        }

        var answer = await SendAsync("api/publish", body.ToArray(), key: null, cancellationToken).ConfigureAwait(false);
        var results = new List<PublishResult>(list.Count);
        foreach (var e in answer.EnumerateArray())
        {
            var topic = e.GetProperty("topic").GetString()!;
            results.Add(e.TryGetProperty("error", out var error)
                ? new PublishResult(topic, null, ToException(error, null))
                : new PublishResult(topic, new PushPosition(e.GetProperty("epoch").GetString()!, e.GetProperty("seq").GetInt64()), null));
        }

        return results;
    }

    private const string OctetStream = "application/octet-stream";

    private async Task<PushPosition> PostOneAsync(string path, ReadOnlyMemory<byte> body, string? key, CancellationToken cancellationToken, string contentType = "application/json")
    {
        var answer = await SendAsync(path, body, key ?? NewKey(), cancellationToken, contentType).ConfigureAwait(false);
        return new PushPosition(answer.GetProperty("epoch").GetString()!, answer.GetProperty("seq").GetInt64());
    }

    private async Task<JsonElement> SendAsync(string path, ReadOnlyMemory<byte> body, string? key, CancellationToken cancellationToken, string contentType = "application/json")
    {
        for (var attempt = 1; ; attempt++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new ReadOnlyMemoryContent(body) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
            if (key is not null)
            {
                request.Headers.TryAddWithoutValidation(IdempotencyHeader, key);
            }

            if (_options.AccessTokenProvider is { } provider && await provider(cancellationToken).ConfigureAwait(false) is { Length: > 0 } token)
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            }

            Exception? transient;
            try
            {
                using var response = await _http.SendAsync(request, cancellationToken).ConfigureAwait(false);
                var text = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
                var json = text.Length > 0 ? TryParse(text) : null;
                if (response.IsSuccessStatusCode && json is { } ok)
                {
                    return ok;
                }

                var status = (int)response.StatusCode;
                var failure = json is { ValueKind: JsonValueKind.Object } problem
                    ? ToException(problem, status)
                    : new PushException(status >= 500 ? "unavailable" : "bad_request", $"The gateway answered {status}.", status);
                if (!IsTransient(response.StatusCode))
                {
                    throw failure;
                }

                transient = failure;
            }
            catch (HttpRequestException ex)
            {
                transient = ex;
            }
            catch (TaskCanceledException ex) when (!cancellationToken.IsCancellationRequested)
            {
                transient = ex; // HttpClient's timeout
            }

            if (attempt >= _options.MaxAttempts)
            {
                throw transient as PushException ?? new PushException("unavailable", "The gateway could not be reached.", null, transient);
            }

            var ceiling = Math.Min(_options.RetryMaxDelay.TotalMilliseconds, _options.RetryBaseDelay.TotalMilliseconds * Math.Pow(2, attempt - 1));
            await Task.Delay(TimeSpan.FromMilliseconds((ceiling / 2) + (Random.Shared.NextDouble() * ceiling / 2)), cancellationToken).ConfigureAwait(false);
        }
    }

    private static bool IsTransient(HttpStatusCode status) =>
        status is HttpStatusCode.RequestTimeout or HttpStatusCode.TooManyRequests || ((int)status >= 500 && status != HttpStatusCode.NotImplemented);

    private static JsonElement? TryParse(byte[] text)
    {
        try
        {
            return JsonDocument.Parse(text).RootElement.Clone();
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static PushException ToException(JsonElement problem, int? status) => new(
        problem.TryGetProperty("error", out var code) && code.ValueKind == JsonValueKind.String ? code.GetString()! : "unavailable",
        problem.TryGetProperty("message", out var message) && message.ValueKind == JsonValueKind.String ? message.GetString()! : "The request was refused.",
        status);

    private static string NewKey() => Guid.NewGuid().ToString("N");
}
