using Orleans.Concurrency;

namespace OrleansPush;

/// <summary>Delivers one event topic's events to one webhook endpoint, in order, from the endpoint's last acknowledged
/// position (key: <c>{shard}|{endpoint}</c>).</summary>
[Alias("OrleansPush.IWebhookDispatcherGrain")]
public interface IWebhookDispatcherGrain : IGrainWithStringKey
{
    /// <summary>New events may be there: deliver them (returns at once; the delivery runs in the grain).</summary>
    [OneWay]
    [Alias("Wake")]
    Task WakeAsync();

    /// <summary>The seq of the event topic up to which the endpoint has acknowledged (or skipped) events.</summary>
    [Alias("GetAcknowledged")]
    Task<TopicPosition> GetAcknowledgedAsync();
}

/// <summary>A dispatcher's durable position in its event topic.</summary>
[GenerateSerializer, Alias("OrleansPush.WebhookCursor")]
public sealed class WebhookCursor
{
    [Id(0)] public string? Epoch { get; set; }

    [Id(1)] public long Seq { get; set; }
}
