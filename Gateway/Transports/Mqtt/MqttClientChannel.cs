using System.Net;
using System.Security.Cryptography.X509Certificates;
using MQTTnet;
using MQTTnet.Adapter;
using MQTTnet.Diagnostics.Logger;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;
using MQTTnet.Server;

namespace OrleansPush.Gateway.Transports.Mqtt;

/// <summary>A client's will, taken out of its CONNECT: published by <see cref="MqttBridge"/> (not by the broker) when
/// the client goes without DISCONNECT, after <see cref="Delay"/>.
/// <see cref="Properties"/>: its MQTT 5 message properties (<see cref="MqttMessageProperties"/>), null when it has none.</summary>
internal sealed record MqttWill(string Topic, byte[] Payload, MqttQualityOfServiceLevel Qos, bool Retain, TimeSpan Delay, byte[]? Properties = null);

/// <summary>Puts <see cref="MqttClientChannel"/> between a listener (TCP or WebSocket) and the broker.</summary>
internal sealed class MqttChannelListener(IMqttServerAdapter inner) : IMqttServerAdapter
{
    private Func<IMqttChannelAdapter, Task>? _handler;

    public Func<IMqttChannelAdapter, Task>? ClientHandler
    {
        get => _handler;
        set
        {
            _handler = value;
            inner.ClientHandler = value is null ? null : channel => value(new MqttClientChannel(channel));
        }
    }

    public Task StartAsync(MqttServerOptions options, IMqttNetLogger logger) => inner.StartAsync(options, logger);

    public Task StopAsync() => inner.StopAsync();

    public void Dispose() => inner.Dispose();
}

/// <summary>
/// One client's channel, seen before the broker reads its CONNECT (the broker offers no hook there):
/// <list type="bullet">
/// <item>An MQTT 3.1.1 client without a client id and with a clean session is given a unique one, as Mosquitto does
/// (the broker refuses it otherwise; MQTT 5 clients are assigned one through the CONNACK, see <see cref="MqttBridge"/>).
/// Without a clean session it stays empty and is refused "identifier rejected", as MQTT 3.1.1 §3.1.3.1 requires.</item>
/// <item>The will is taken out of the CONNECT (<see cref="Will"/>): the broker would publish it at once, ignoring the
/// MQTT 5 will delay; <see cref="MqttBridge"/> publishes it instead.</item>
/// </list>
/// Every later packet passes straight through.
/// </summary>
internal sealed class MqttClientChannel(IMqttChannelAdapter inner) : IMqttChannelAdapter
{
    private const string AssignedPrefix = "orleanspush-";
    private bool _connectSeen;

    /// <summary>The will of the CONNECT, when it had one.</summary>
    public MqttWill? Will { get; private set; }

    public static string NewClientId() => AssignedPrefix + Guid.NewGuid().ToString("N");

    public long BytesReceived => inner.BytesReceived;

    public long BytesSent => inner.BytesSent;

    public X509Certificate2 ClientCertificate => inner.ClientCertificate;

    public EndPoint RemoteEndPoint => inner.RemoteEndPoint;

    public EndPoint LocalEndPoint => inner.LocalEndPoint;

    public bool IsSecureConnection => inner.IsSecureConnection;

    public MqttPacketFormatterAdapter PacketFormatterAdapter => inner.PacketFormatterAdapter;

    public Task ConnectAsync(CancellationToken cancellationToken) => inner.ConnectAsync(cancellationToken);

    public Task DisconnectAsync(CancellationToken cancellationToken) => inner.DisconnectAsync(cancellationToken);

    public Task<MqttPacket> ReceivePacketAsync(CancellationToken cancellationToken) =>
        _connectSeen ? inner.ReceivePacketAsync(cancellationToken) : ReceiveConnectAsync(cancellationToken);

    public void ResetStatistics() => inner.ResetStatistics();

    /// <summary>Set by <see cref="MqttBridge"/> when a persistent session resumes: the CONNACK says session present (the
    /// broker keeps no session of its own; the gateway restores its subscriptions).</summary>
    public bool SessionPresent { get; set; }

    public Task SendPacketAsync(MqttPacket packet, CancellationToken cancellationToken)
    {
        if (SessionPresent && packet is MqttConnAckPacket connack)
        {
            connack.IsSessionPresent = true;
            SessionPresent = false;
        }

        return inner.SendPacketAsync(packet, cancellationToken);
    }

    public void Dispose() => inner.Dispose();

    private async Task<MqttPacket> ReceiveConnectAsync(CancellationToken cancellationToken)
    {
        MqttPacket packet;
        try
        {
            packet = await inner.ReceivePacketAsync(cancellationToken);
        }
        catch (MQTTnet.Exceptions.MqttProtocolViolationException ex) when (ex.Message.Contains("[MQTT-3.1.3-7]", StringComparison.Ordinal))
        {
            // MQTT 3.1.1 without a client id and without a clean session: the library's decoder refuses it and would just
            // close the socket; §3.1.3.1 asks for CONNACK 0x02 (identifier rejected) first.
            await inner.SendPacketAsync(new MqttConnAckPacket { ReturnCode = MqttConnectReturnCode.ConnectionRefusedIdentifierRejected }, cancellationToken);
            throw;
        }

        _connectSeen = true;
        if (packet is not MqttConnectPacket connect)
        {
            return packet;
        }

        var mqtt5 = inner.PacketFormatterAdapter.ProtocolVersion == MqttProtocolVersion.V500;
        if (string.IsNullOrEmpty(connect.ClientId) && connect.CleanSession && !mqtt5)
        {
            connect.ClientId = NewClientId();
        }

        if (connect.WillFlag)
        {
            // MQTT 5 §3.1.3.2.2: the will waits for its delay or for the session's end, whichever comes first.
            var delay = mqtt5 ? TimeSpan.FromSeconds(Math.Min(connect.WillDelayInterval, connect.SessionExpiryInterval)) : TimeSpan.Zero;
            // An MQTT 3.1.1 CONNECT has none of these properties (they read as absent).
            var properties = MqttMessageProperties.Encode(new MqttApplicationMessage
            {
                QualityOfServiceLevel = connect.WillQoS,
                Retain = connect.WillRetain,
                PayloadFormatIndicator = connect.WillPayloadFormatIndicator,
                MessageExpiryInterval = connect.WillMessageExpiryInterval,
                ContentType = connect.WillContentType,
                ResponseTopic = connect.WillResponseTopic,
                CorrelationData = connect.WillCorrelationData,
                UserProperties = connect.WillUserProperties,
            }, origin: null);
            Will = new MqttWill(connect.WillTopic, connect.WillMessage ?? [], connect.WillQoS, connect.WillRetain, delay, properties);
            connect.WillFlag = false;
        }

        return packet;
    }
}
