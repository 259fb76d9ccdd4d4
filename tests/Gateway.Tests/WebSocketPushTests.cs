using System.Net.Http.Json;

namespace OrleansPush.Gateway.Tests;

[Collection(GatewayCollection.Name)]
public sealed class WebSocketPushTests(GatewayFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task SubscriberReceivesHttpPublishesByteForByteInOrderOnce()
    {
        var topic = GatewayFixture.NewTopic("news");
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var ok = await client.SubscribeAsync(topic);
        Assert.Equal("ok", ok.Op);
        Assert.Equal(0, ok.Seq);

        // Odd spacing, unicode and escapes: data must come back exactly as published.
        var bodies = Enumerable.Range(1, 20).Select(i => $"{{ \"i\" : {i},\"s\":\"caf\\u00e9 ☺\", \"n\":[1, 2.50 ,null] }}").ToArray();
        foreach (var body in bodies)
        {
            await Gateway.PublishAsync(topic, body);
        }

        var messages = await client.MessagesAsync(20);
        Assert.Equal(Enumerable.Range(1, 20).Select(i => (long)i), messages.Select(m => m.Seq));
        Assert.Equal(bodies, messages.Select(m => m.RawData));
        Assert.All(messages, m => Assert.Equal(topic, m.Topic));
        Assert.All(messages, m => Assert.Equal(ok.Epoch, m.Epoch));
        Assert.True(await client.IsQuietAsync(TimeSpan.FromMilliseconds(500)), "no duplicate may follow");
    }

    [Fact]
    public async Task TwoHundredSubscribersEachReceiveFiftyMessagesInOrderWithoutDuplicates()
    {
        var topic = GatewayFixture.NewTopic("fan");
        var clients = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => WsClient.ConnectAsync(Gateway.WebSocketUri())));
        try
        {
            await Task.WhenAll(clients.Select(c => c.SubscribeAsync(topic)));
            for (var i = 1; i <= 50; i++)
            {
                await Gateway.PublishAsync(topic, $"{{\"i\":{i}}}");
            }

            var received = await Task.WhenAll(clients.Select(c => c.MessagesAsync(50, TimeSpan.FromSeconds(30))));
            foreach (var messages in received)
            {
                Assert.Equal(Enumerable.Range(1, 50).Select(i => (long)i), messages.Select(m => m.Seq));
                Assert.Equal(Enumerable.Range(1, 50).Select(i => $"{{\"i\":{i}}}"), messages.Select(m => m.RawData));
            }

            var quiet = await Task.WhenAll(clients.Take(20).Select(c => c.IsQuietAsync(TimeSpan.FromMilliseconds(300))));
            Assert.All(quiet, Assert.True);
        }
        finally
        {
            await Task.WhenAll(clients.Select(c => c.DisposeAsync().AsTask()));
        }
    }

    [Fact]
    public async Task UnsubscribedClientReceivesNothingMore()
    {
        var topic = GatewayFixture.NewTopic();
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await client.SubscribeAsync(topic);
        await Gateway.PublishAsync(topic, "1");
        Assert.Single(await client.MessagesAsync(1));

        Assert.Equal("ok", (await client.RequestAsync("unsub", new { topic })).Op);
        await Gateway.PublishAsync(topic, "2");
        Assert.True(await client.IsQuietAsync(TimeSpan.FromMilliseconds(500)));
    }

    [Fact]
    public async Task ClientPublishWorksWhereTheNamespaceAllowsItAndIsForbiddenElsewhere()
    {
        var allowed = "chat:" + Guid.NewGuid().ToString("N");
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await client.SubscribeAsync(allowed);

        var published = await client.RequestAsync("pub", new { topic = allowed, data = new { text = "hi" } });
        Assert.Equal("ok", published.Op);
        Assert.Equal(1, published.Seq);
        var message = Assert.Single(await client.MessagesAsync(1));
        Assert.Equal("{\"text\":\"hi\"}", message.RawData);

        var refused = await client.RequestAsync("pub", new { topic = GatewayFixture.NewTopic(), data = 1 });
        Assert.Equal("error", refused.Op);
        Assert.Equal("forbidden", refused.Code);
    }

    [Fact]
    public async Task ResumeWithSinceReplaysMissedMessagesThenContinuesLive()
    {
        var topic = GatewayFixture.NewTopic();
        await using (var first = await WsClient.ConnectAsync(Gateway.WebSocketUri()))
        {
            await first.SubscribeAsync(topic);
            await Gateway.PublishAsync(topic, "{\"n\":1}");
            var seen = Assert.Single(await first.MessagesAsync(1));
            Assert.Equal(1, seen.Seq);
        }

        for (var n = 2; n <= 6; n++)
        {
            await Gateway.PublishAsync(topic, $"{{\"n\":{n}}}");
        }

        await using var again = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var epoch = (await Gateway.Http.GetFromJsonAsync<PublishAnswer>("/api/topics/" + topic))!.Epoch;
        var ok = await again.SubscribeAsync(topic, since: new { epoch, seq = 1 });
        Assert.Equal("ok", ok.Op);
        Assert.True(ok.Recovered);
        Assert.Equal(6, ok.Seq);

        await Gateway.PublishAsync(topic, "{\"n\":7}");
        var messages = await again.MessagesAsync(6);
        Assert.Equal([2L, 3, 4, 5, 6, 7], messages.Select(m => m.Seq));
        Assert.True(await again.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
    }

    [Fact]
    public async Task ResumeBeyondHistoryOrFromAnotherEpochSaysNotRecovered()
    {
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        for (var n = 1; n <= 6; n++)
        {
            await Gateway.PublishAsync(topic, $"{{\"n\":{n}}}");
        }

        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var epoch = (await Gateway.Http.GetFromJsonAsync<PublishAnswer>("/api/topics/" + topic))!.Epoch;
        var trimmed = await client.SubscribeAsync(topic, since: new { epoch, seq = 1 });
        Assert.False(trimmed.Recovered);
        Assert.Equal(6, trimmed.Seq);
        // What is still in history (seq 4..6) is delivered; the client was told the rest is gone.
        Assert.Equal([4L, 5, 6], (await client.MessagesAsync(3)).Select(m => m.Seq));

        // A since of another epoch: nothing of that epoch can be recovered, and this epoch is delivered from what
        // history still holds (a new epoch is delivered from its start, to resumes as to live subscribers).
        await using var other = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var wrongEpoch = await other.SubscribeAsync(topic, since: new { epoch = "not-" + epoch, seq = 5 });
        Assert.False(wrongEpoch.Recovered);
        Assert.Equal(epoch, wrongEpoch.Epoch);
        Assert.Equal(6, wrongEpoch.Seq);
        Assert.Equal([4L, 5, 6], (await other.MessagesAsync(3)).Select(m => m.Seq));
        Assert.True(await other.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
    }

    [Fact]
    public async Task LastDeliversTheNewestMessagesFirst()
    {
        var topic = GatewayFixture.NewTopic("game");
        for (var n = 1; n <= 5; n++)
        {
            await Gateway.PublishAsync(topic, $"{{\"state\":{n}}}");
        }

        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var ok = await client.SubscribeAsync(topic, last: 2);
        Assert.Equal(5, ok.Seq);
        Assert.Equal(["{\"state\":4}", "{\"state\":5}"], (await client.MessagesAsync(2)).Select(m => m.RawData));
    }

    [Fact]
    public async Task UserReceivesDirectPushesAndServerSideSubscriptionsOnEveryConnection()
    {
        var user = "u" + Guid.NewGuid().ToString("N");
        var topic = GatewayFixture.NewTopic("team");
        await using var phone = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user));
        await using var laptop = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user));
        Assert.Equal("ok", (await phone.RequestAsync("ping")).Op);
        Assert.Equal("ok", (await laptop.RequestAsync("ping")).Op);

        using (var direct = await Gateway.Http.PostAsync("/api/users/" + user, new StringContent("{\"dm\":1}")))
        {
            Assert.True(direct.IsSuccessStatusCode);
        }

        foreach (var client in new[] { phone, laptop })
        {
            var dm = Assert.Single(await client.MessagesAsync(1));
            Assert.Equal("user:" + user, dm.Topic);
            Assert.Equal("{\"dm\":1}", dm.RawData);
        }

        using (var subscribe = await Gateway.Http.PutAsync($"/api/users/{user}/subscriptions/{topic}", null))
        {
            Assert.True(subscribe.IsSuccessStatusCode);
        }

        // The change travels to the gateway on its stream; poll by publishing until it has taken effect.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        Frame? first = null;
        while (first is null && DateTime.UtcNow < deadline)
        {
            await Gateway.PublishAsync(topic, "{\"team\":true}");
            try
            {
                first = (await phone.MessagesAsync(1, TimeSpan.FromMilliseconds(500)))[0];
            }
            catch (OperationCanceledException)
            {
            }
        }

        Assert.NotNull(first);
        Assert.Equal(topic, first.Topic);
        Assert.Equal(topic, (await laptop.MessagesAsync(1)).Single().Topic);

        // A connection that arrives later follows the user's subscriptions too.
        await using var tablet = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user));
        Assert.Equal("ok", (await tablet.RequestAsync("ping")).Op);
        var position = await Gateway.PublishAsync(topic, "{\"later\":true}");
        var later = await tablet.MessagesAsync(1);
        Assert.Equal(position.Seq, later[0].Seq);
    }

    [Fact]
    public async Task UserWhoComesBackWithSinceGetsWhatArrivedWhileOffline()
    {
        var user = "u" + Guid.NewGuid().ToString("N");
        Frame first;
        await using (var before = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user)))
        {
            Assert.Equal("ok", (await before.RequestAsync("ping")).Op);
            using var push = await Gateway.Http.PostAsync("/api/users/" + user, new StringContent("{\"n\":1}"));
            first = (await before.MessagesAsync(1)).Single();
        }

        // Offline: the personal channel's history (1,000 messages / 24 h by default) is the inbox.
        for (var n = 2; n <= 4; n++)
        {
            using var push = await Gateway.Http.PostAsync("/api/users/" + user, new StringContent($"{{\"n\":{n}}}"));
            Assert.True(push.IsSuccessStatusCode);
        }

        await using var after = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user));
        var ok = await after.SubscribeAsync("user:" + user, since: new { epoch = first.Epoch, seq = first.Seq });
        Assert.True(ok.Recovered);
        Assert.Equal(["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"], (await after.MessagesAsync(3)).Select(m => m.RawData));
    }

    [Fact]
    public async Task ResumingThePersonalChannelRightAfterConnectingKeepsOrderWhileNewMessagesArrive()
    {
        // The connection is subscribed to its personal channel as it opens; a message pushed before the client's
        // resume lands must wait for the replay, not overtake it (the client would lose 2 and 3 or see them late).
        var user = "u" + Guid.NewGuid().ToString("N");
        var first = await PushAndReadFirstAsync(user);
        await PushToUserAsync(user, 2, 3);

        await using var after = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user));
        Assert.Equal("ok", (await after.RequestAsync("ping")).Op);
        await PushToUserAsync(user, 4);
        var ok = await after.SubscribeAsync("user:" + user, since: new { epoch = first.Epoch, seq = first.Seq });
        Assert.True(ok.Recovered);
        await PushToUserAsync(user, 5);
        var messages = await after.MessagesAsync(4);
        Assert.Equal([2L, 3, 4, 5], messages.Select(m => m.Seq));
        Assert.Equal(["{\"n\":2}", "{\"n\":3}", "{\"n\":4}", "{\"n\":5}"], messages.Select(m => m.RawData));
        Assert.True(await after.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
    }

    [Fact]
    public async Task ResumeFromBeforeWhatTheConnectionAlreadyGotLiveSaysItCannotRecover()
    {
        // With the hold off, a server-side subscription is live as the connection opens: once a newer message went
        // out, older ones cannot follow in order, and the answer says so instead of claiming a recovery.
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Gateway:AutoSubscriptionHold"] = "00:00:00",
        });
        var user = "u" + Guid.NewGuid().ToString("N");
        var topic = GatewayFixture.NewTopic("news");
        using (var subscribe = await gateway.Http.PutAsync($"/api/users/{user}/subscriptions/{topic}", null))
        {
            Assert.True(subscribe.IsSuccessStatusCode);
        }

        // A watcher makes sure the gateway has seen seq 1 and 2 before the user's connection opens.
        await using var watcher = await WsClient.ConnectAsync(gateway.WebSocketUri());
        Assert.Equal("ok", (await watcher.SubscribeAsync(topic)).Op);
        await gateway.PublishAsync(topic, "{\"n\":1}");
        await gateway.PublishAsync(topic, "{\"n\":2}");
        var seen = await watcher.MessagesAsync(2);

        await using var client = await WsClient.ConnectAsync(gateway.WebSocketUri("user=" + user));
        Assert.Equal("ok", (await client.RequestAsync("ping")).Op);
        await gateway.PublishAsync(topic, "{\"n\":3}");
        Assert.Equal(3, (await client.MessagesAsync(1)).Single().Seq);

        var ok = await client.SubscribeAsync(topic, since: new { epoch = seen[0].Epoch, seq = 1 });
        Assert.False(ok.Recovered);
        Assert.Equal(3, ok.Seq);
        Assert.True(await client.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
    }

    private async Task<Frame> PushAndReadFirstAsync(string user)
    {
        await using var before = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user));
        Assert.Equal("ok", (await before.RequestAsync("ping")).Op);
        await PushToUserAsync(user, 1);
        return (await before.MessagesAsync(1)).Single();
    }

    private async Task PushToUserAsync(string user, params int[] numbers)
    {
        foreach (var n in numbers)
        {
            using var push = await Gateway.Http.PostAsync("/api/users/" + user, new StringContent($"{{\"n\":{n}}}"));
            Assert.True(push.IsSuccessStatusCode);
        }
    }

    [Fact]
    public async Task AnotherUsersPersonalChannelIsForbidden()
    {
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=alice"));
        var refused = await client.SubscribeAsync("user:bob");
        Assert.Equal("forbidden", refused.Code);
        await using var anonymous = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        Assert.Equal("forbidden", (await anonymous.SubscribeAsync("user:alice")).Code);
    }
}
