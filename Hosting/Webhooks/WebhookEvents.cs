using System.Buffers;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace OrleansPush.Hosting.Webhooks;

/// <summary>
/// Produces webhook events. An event is published to its event topic (<c>_webhooks:{shard}</c>, chosen by the topic or
/// user it is about, so one topic's events stay in order), where it is durable as any message is on the configured
/// store; then the dispatchers of the endpoints that want it are woken. Each endpoint is a subscriber of the event topics
/// that resumes from its last acknowledged position, so an event outlives the silo that produced it and a slow endpoint
/// holds up nothing but its own deliveries. Producing an event costs one publish, and only when some endpoint wants its
/// type.
/// </summary>
public sealed class WebhookEvents(IGrainFactory grains, IOptions<WebhookOptions> options, TimeProvider time, ILogger<WebhookEvents> logger)
{
    private const int Attempts = 5;
    private readonly WebhookOptions _options = options.Value;

    public bool Wants(string type) => _options.Wants(type);

    /// <summary>Publishes the event (retried with one idempotency key, so it is stored once); logs and gives up after
    /// <see cref="Attempts"/> failures rather than failing the caller's own work.</summary>
    public async Task EmitAsync(string type, string orderKey, string? topic, string? user, ReadOnlyMemory<byte> data = default,
        PayloadFormat format = PayloadFormat.Json)
    {
        if (!_options.Wants(type))
        {
            return;
        }

        var body = Body(type, topic, user, data, format);
        var eventTopic = _options.EventTopic(orderKey);
        var key = Guid.NewGuid().ToString("N");
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await grains.GetGrain<ITopicGrain>(eventTopic).PublishAsync(body, key);
                break;
            }
            catch (Exception ex) when (attempt < Attempts)
            {
                WebhookLog.EmitRetry(logger, type, eventTopic, ex);
                await Task.Delay(TimeSpan.FromMilliseconds(100 * attempt));
            }
            catch (Exception ex)
            {
                WebhookLog.EmitFailed(logger, type, topic ?? user ?? string.Empty, ex);
                return;
            }
        }

        var shard = _options.Shard(orderKey);
        foreach (var (name, endpoint) in _options.Endpoints)
        {
            if (endpoint.Wants(type))
            {
                _ = grains.GetGrain<IWebhookDispatcherGrain>(WebhookOptions.DispatcherKey(name, shard)).WakeAsync();
            }
        }
    }

    /// <summary>The event's body without its id (the dispatcher adds it: the event topic's position names the event).</summary>
    private byte[] Body(string type, string? topic, string? user, ReadOnlyMemory<byte> data, PayloadFormat format)
    {
        var buffer = new ArrayBufferWriter<byte>(128 + data.Length * 4 / 3);
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("type", type);
            json.WriteString("time", time.GetUtcNow().UtcDateTime);
            if (topic is not null)
            {
                json.WriteString("topic", topic);
            }

            if (user is not null)
            {
                json.WriteString("user", user);
            }

            if (!data.IsEmpty)
            {
                if (format == PayloadFormat.Json)
                {
                    json.WritePropertyName("data");
                    json.WriteRawValue(data.Span, skipInputValidation: true);
                }
                else
                {
                    json.WriteBase64String("data_b64", data.Span);
                }
            }

            json.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }
}

internal static partial class WebhookLog
{
    [LoggerMessage(EventId = 1201, Level = LogLevel.Warning, Message = "Storing a {Type} webhook event in {EventTopic} failed; trying again")]
    public static partial void EmitRetry(ILogger logger, string type, string eventTopic, Exception exception);

    [LoggerMessage(EventId = 1202, Level = LogLevel.Error, Message = "A {Type} webhook event of {Subject} could not be stored and is lost")]
    public static partial void EmitFailed(ILogger logger, string type, string subject, Exception exception);
}
