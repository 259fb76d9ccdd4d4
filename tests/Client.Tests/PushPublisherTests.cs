using System.Text.Json;
using OrleansPush.Gateway.Tests;

namespace OrleansPush.Client.Tests;

public sealed class PushPublisherTests
{
    [Fact]
    public async Task RetriedPublishWithTheSameKeyIsSequencedOnce()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync();
        var publisher = new PushPublisher(gateway.Http);
        var topic = "news-" + Guid.NewGuid().ToString("N");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));

        var first = await publisher.PublishAsync(topic, new { order = 42 }, "order-42", cts.Token);
        var again = await publisher.PublishAsync(topic, new { order = 42 }, "order-42", cts.Token);
        var other = await publisher.PublishAsync(topic, new { order = 43 }, cancellationToken: cts.Token);
        Assert.Equal(first, again);
        Assert.Equal(first.Seq + 1, other.Seq);
    }

    [Fact]
    public async Task BatchAnswersEachItemAndARetriedBatchIsDeliveredOnce()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync();
        var publisher = new PushPublisher(gateway.Http);
        var topic = "batch-" + Guid.NewGuid().ToString("N");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        PublishItem[] items =
        [
            PublishItem.Create(topic, 1, "b-1"),
            PublishItem.Create(topic, 2, "b-2"),
            PublishItem.Create("bad topic", 3),
        ];

        var results = await publisher.PublishBatchAsync(items, cts.Token);
        Assert.Equal([1L, 2L], results.Take(2).Select(r => r.Position!.Seq));
        Assert.False(results[2].Succeeded);
        Assert.Equal("bad_topic", results[2].Error!.Code);

        var retried = await publisher.PublishBatchAsync(items.Take(2), cts.Token);
        Assert.Equal([1L, 2L], retried.Select(r => r.Position!.Seq));
        using var response = await gateway.Http.GetAsync("/api/topics/" + topic, cts.Token);
        var position = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cts.Token)).RootElement;
        Assert.Equal(2, position.GetProperty("seq").GetInt64());
    }

    [Fact]
    public async Task RefusedPublishIsAPushExceptionWithTheServersCode()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync();
        var publisher = new PushPublisher(gateway.Http);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var refused = await Assert.ThrowsAsync<PushException>(() => publisher.PublishJsonAsync("news", "{not json"u8.ToArray(), cancellationToken: cts.Token));
        Assert.Equal(400, refused.Status);
        Assert.False(string.IsNullOrEmpty(refused.Code));
    }
}
