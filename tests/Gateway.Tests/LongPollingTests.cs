using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace OrleansPush.Gateway.Tests;

[Collection(HttpStreamingCollection.Name)]
public sealed class LongPollingTests(HttpStreamingFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task PollerGetsWhatIsNewerAtOnce()
    {
        var topic = GatewayFixture.NewTopic("poll");
        var first = await Gateway.PublishAsync(topic, "{\"n\":1}");
        await Gateway.PublishAsync(topic, "{\"n\":2}");
        await Gateway.PublishAsync(topic, "{ \"n\" : 3 }");

        var watch = Stopwatch.StartNew();
        var answer = await PollAsync($"topic={topic}&since={first.Epoch}:1");
        Assert.True(watch.Elapsed < HttpStreamingFixture.PollWait, $"answered after {watch.Elapsed}, not at once");
        Assert.Equal([2L, 3L], Messages(answer).Select(m => m.GetProperty("seq").GetInt64()));
        Assert.Equal(["{\"n\":2}", "{ \"n\" : 3 }"], Messages(answer).Select(m => m.GetProperty("data").GetRawText()));
        Assert.All(Messages(answer), m => Assert.Equal(topic, m.GetProperty("topic").GetString()));
        var position = answer.GetProperty("positions").GetProperty(topic);
        Assert.Equal(first.Epoch, position.GetProperty("epoch").GetString());
        Assert.Equal(3, position.GetProperty("seq").GetInt64());
        Assert.True(position.GetProperty("recovered").GetBoolean());
        Assert.True(answer.GetProperty("recovered").GetBoolean());
    }

    [Fact]
    public async Task WaitingPollerReturnsWhenAMessageIsPublished()
    {
        var topic = GatewayFixture.NewTopic("pollwait");
        var first = await Gateway.PublishAsync(topic, "1");
        var watch = Stopwatch.StartNew();
        var poll = PollAsync($"topic={topic}&since={first.Epoch}:1");
        await Task.Delay(300);
        Assert.False(poll.IsCompleted, "nothing newer yet: the poll waits");
        await Gateway.PublishAsync(topic, "{\"late\":true}");

        var answer = await poll.WaitAsync(WsClient.DefaultWait);
        Assert.True(watch.Elapsed < HttpStreamingFixture.PollWait, $"answered after {watch.Elapsed}: it should wake on the message");
        var message = Assert.Single(Messages(answer));
        Assert.Equal(2, message.GetProperty("seq").GetInt64());
        Assert.Equal("{\"late\":true}", message.GetProperty("data").GetRawText());
        Assert.Equal(2, answer.GetProperty("positions").GetProperty(topic).GetProperty("seq").GetInt64());
    }

    [Fact]
    public async Task PollThatTimesOutReturnsNoMessagesAndThePositionsToContinueFrom()
    {
        var a = GatewayFixture.NewTopic("pollquiet");
        var b = GatewayFixture.NewTopic("pollnew");
        var first = await Gateway.PublishAsync(a, "1");
        var watch = Stopwatch.StartNew();
        var answer = await PollAsync($"topic={a}&since={first.Epoch}:1&topic={b}");
        Assert.True(watch.Elapsed >= HttpStreamingFixture.PollWait - TimeSpan.FromMilliseconds(200), $"answered after {watch.Elapsed}, before the wait");
        Assert.Empty(Messages(answer));
        var positions = answer.GetProperty("positions");
        Assert.Equal(first.Epoch, positions.GetProperty(a).GetProperty("epoch").GetString());
        Assert.Equal(1, positions.GetProperty(a).GetProperty("seq").GetInt64());
        Assert.Equal(0, positions.GetProperty(b).GetProperty("seq").GetInt64());
        Assert.False(positions.GetProperty(b).TryGetProperty("recovered", out _), "b had no since");
    }

    [Fact]
    public async Task PollingOnFromEachAnswersPositionsGetsEveryMessageOnceAcrossTheMessageLimit()
    {
        var a = GatewayFixture.NewTopic("pa");
        var b = GatewayFixture.NewTopic("pb");
        var seedA = await Gateway.PublishAsync(a, "0");
        var seedB = await Gateway.PublishAsync(b, "0");
        for (var i = 1; i <= 8; i++)
        {
            await Gateway.PublishAsync(a, i.ToString());
            await Gateway.PublishAsync(b, (100 + i).ToString());
        }

        var since = new Dictionary<string, string> { [a] = $"{seedA.Epoch}:1", [b] = $"{seedB.Epoch}:1" };
        var received = new List<(string Topic, long Seq)>();
        for (var round = 0; round < 10 && received.Count < 16; round++)
        {
            var answer = await PollAsync($"topic={a}&since={since[a]}&topic={b}&since={since[b]}");
            var messages = Messages(answer);
            Assert.True(messages.Count <= HttpStreamingFixture.PollMaxMessages);
            received.AddRange(messages.Select(m => (m.GetProperty("topic").GetString()!, m.GetProperty("seq").GetInt64())));
            foreach (var topic in new[] { a, b })
            {
                var p = answer.GetProperty("positions").GetProperty(topic);
                since[topic] = $"{p.GetProperty("epoch").GetString()}:{p.GetProperty("seq").GetInt64()}";
            }
        }

        Assert.Equal(Enumerable.Range(2, 8).Select(i => (long)i), received.Where(r => r.Topic == a).Select(r => r.Seq));
        Assert.Equal(Enumerable.Range(2, 8).Select(i => (long)i), received.Where(r => r.Topic == b).Select(r => r.Seq));
    }

    [Fact]
    public async Task PollFromBeyondHistoryIsReportedAsRecoveredFalse()
    {
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        var first = await Gateway.PublishAsync(topic, "1");
        for (var i = 2; i <= 10; i++)
        {
            await Gateway.PublishAsync(topic, i.ToString());
        }

        var answer = await PollAsync($"topic={topic}&since={first.Epoch}:1");
        Assert.False(answer.GetProperty("recovered").GetBoolean());
        Assert.False(answer.GetProperty("positions").GetProperty(topic).GetProperty("recovered").GetBoolean());
        Assert.Equal([8L, 9L, 10L], Messages(answer).Select(m => m.GetProperty("seq").GetInt64()));
    }

    [Fact]
    public async Task AbortedPollLeavesNoSubscriptionBehind()
    {
        var topic = GatewayFixture.NewTopic("pollabort");
        var first = await Gateway.PublishAsync(topic, "1");
        using (var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(400)))
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Gateway.Http.GetAsync($"/poll?topic={topic}&since={first.Epoch}:1", cts.Token));
        }

        // The request is gone: a message published now is for nobody, and the gateway keeps going.
        await Gateway.PublishAsync(topic, "2");
        var answer = await PollAsync($"topic={topic}&since={first.Epoch}:1");
        Assert.Equal(2, Assert.Single(Messages(answer)).GetProperty("seq").GetInt64());
    }

    [Theory]
    [InlineData("/poll", "bad_request", HttpStatusCode.BadRequest)]
    [InlineData("/poll?topic=a&since=nocolon", "bad_request", HttpStatusCode.BadRequest)]
    [InlineData("/poll?topic=a&since=e:1&since=e:2", "bad_request", HttpStatusCode.BadRequest)]
    [InlineData("/poll?topic=bad%20topic", "bad_topic", HttpStatusCode.BadRequest)]
    [InlineData("/poll?topic=user:nobody", "forbidden", HttpStatusCode.Forbidden)]
    public async Task RefusedPollIsAJsonError(string pathAndQuery, string code, HttpStatusCode status)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        using var response = await Gateway.Http.GetAsync(pathAndQuery, cts.Token);
        Assert.Equal(status, response.StatusCode);
        var error = await response.Content.ReadFromJsonAsync<JsonElement>(cts.Token);
        Assert.Equal(code, error.GetProperty("error").GetString());
    }

    private async Task<JsonElement> PollAsync(string query)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        using var response = await Gateway.Http.GetAsync("/poll?" + query, cts.Token);
        Assert.True(response.IsSuccessStatusCode, $"poll answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cts.Token)}");
        return await response.Content.ReadFromJsonAsync<JsonElement>(cts.Token);
    }

    private static List<JsonElement> Messages(JsonElement answer) => [.. answer.GetProperty("messages").EnumerateArray()];
}
