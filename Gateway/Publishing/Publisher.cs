using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Publishing;

/// <summary>
/// Publishes on behalf of backends (HTTP API) and clients. Checks what the gateway can check (name, size in bytes, and
/// for a JSON payload that it is one JSON value) and hands the message to its topic grain; the answer is the position
/// the grain gave it.
/// </summary>
public sealed class Publisher(IClusterClient cluster, IOptions<GatewayOptions> options, ILogger<Publisher> logger)
{
    private readonly int _maxBytes = options.Value.MaxMessageBytes;
    private readonly TimeSpan _attemptTimeout = options.Value.PublishAttemptTimeout;
    private readonly TimeSpan _publishTimeout = options.Value.PublishTimeout;

    /// <summary>Publishes <paramref name="data"/> to <paramref name="topic"/>: one JSON value when
    /// <paramref name="format"/> is <see cref="PayloadFormat.Json"/>, any bytes when it is <see cref="PayloadFormat.Binary"/>.
    /// <paramref name="properties"/> (<see cref="TopicMessage.Properties"/>) count towards the size limit with the data.</summary>
    /// <exception cref="PushRejectedException">With the protocol's error code when the publish is refused.</exception>
    public Task<TopicPosition> PublishAsync(string topic, ReadOnlyMemory<byte> data, string? idempotencyKey, PayloadFormat format = PayloadFormat.Json,
        byte[]? properties = null)
    {
        var bytes = Validate(topic, data, format, properties?.Length ?? 0);
        return CallAsync(topic, idempotencyKey, properties is null
            ? () => cluster.GetGrain<ITopicGrain>(topic).PublishAsync(bytes, format, idempotencyKey)
            : () => cluster.GetGrain<ITopicGrain>(topic).PublishAsync(bytes, format, properties, idempotencyKey));
    }

    /// <summary>A retained publish (MQTT's retain flag; see <see cref="ITopicGrain.PublishRetainedAsync"/>): it becomes the
    /// topic's latest value, and an empty one clears it without being published. <paramref name="properties"/>: as for
    /// <see cref="PublishAsync"/>.</summary>
    public Task<TopicPosition> PublishRetainedAsync(string topic, ReadOnlyMemory<byte> data, PayloadFormat format, byte[]? properties = null)
    {
        var bytes = Validate(topic, data, format, properties?.Length ?? 0);
        return CallAsync(topic, idempotencyKey: null, () => cluster.GetGrain<ITopicGrain>(topic).PublishRetainedAsync(bytes, format, properties));
    }

    private byte[] Validate(string topic, ReadOnlyMemory<byte> data, PayloadFormat format, int propertiesLength)
    {
        if (!TopicName.IsValid(topic))
        {
            throw new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
        }

        if (TopicName.IsReserved(topic))
        {
            throw new PushRejectedException(WireCodes.Forbidden, "Topics of a namespace that starts with _ are reserved.");
        }

        return Validate(data, format, propertiesLength);
    }

    /// <summary>Publishes to a user's personal channel.</summary>
    public Task<TopicPosition> PushToUserAsync(string userId, ReadOnlyMemory<byte> data, string? idempotencyKey, PayloadFormat format = PayloadFormat.Json)
    {
        if (!TopicName.IsValidUserId(userId))
        {
            throw new PushRejectedException(WireCodes.BadRequest, "A user id is 1-195 characters of A-Z a-z 0-9 _ - . / @ (no ':').");
        }

        var bytes = Validate(data, format);
        return CallAsync(TopicName.Personal(userId), idempotencyKey, () => cluster.GetGrain<IUserGrain>(userId).PushAsync(bytes, format, idempotencyKey));
    }

    private byte[] Validate(ReadOnlyMemory<byte> data, PayloadFormat format, int propertyBytes = 0)
    {
        if (data.Length + propertyBytes > _maxBytes)
        {
            throw new PushRejectedException(WireCodes.TooLarge, $"A message is at most {_maxBytes} bytes.");
        }

        if (format == PayloadFormat.Json && !JsonPayload.IsOneValue(data.Span))
        {
            throw new PushRejectedException(WireCodes.BadRequest, "The message must be one JSON value.");
        }

        return data.ToArray();
    }

    /// <summary>Calls the grain. A call left unanswered for <see cref="GatewayOptions.PublishAttemptTimeout"/> (the
    /// silo it went to died, and Orleans would wait out its whole response timeout) is tried again when it carries an
    /// idempotency key, which makes the retry safe: the grain answers the first attempt's position if that one was
    /// sequenced. Without a key the publisher hears <c>unavailable</c> then, rather than after the response timeout.
    /// An attempt that got no answer may still be sequenced after it was given up, so the last word is then "may have
    /// been published", keyed or not; "not published" is said only when the grain says so.</summary>
    private async Task<TopicPosition> CallAsync(string topic, string? idempotencyKey, Func<Task<TopicPosition>> call)
    {
        var deadline = DateTime.UtcNow + _publishTimeout;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                var position = await call().WaitAsync(_attemptTimeout);
                Observability.GatewayMetrics.MessagePublished();
                return position;
            }
            catch (PushRejectedException rejected) when (rejected.Code != WireCodes.Unavailable || idempotencyKey is null || DateTime.UtcNow >= deadline)
            {
                throw;
            }
            catch (Exception ex) when (ex is not PushRejectedException && (idempotencyKey is null || DateTime.UtcNow + _attemptTimeout > deadline))
            {
                GatewayLog.PublishFailed(logger, topic, ex);
                throw new PushRejectedException(WireCodes.Unavailable, idempotencyKey is null
                    ? "The message may have been published or not; retry it (an Idempotency-Key makes a retry safe)."
                    : "The message may have been published; retry with the same Idempotency-Key to publish it at most once.");
            }
            catch (Exception ex)
            {
                // Keyed, and time is left: the next attempt finds the grain where it lives now.
                GatewayLog.PublishRetried(logger, topic, attempt, ex);
                await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(1000, 100 * attempt)));
            }
        }
    }
}
