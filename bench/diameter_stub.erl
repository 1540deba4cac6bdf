#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noshell
%%
%% A Diameter credit-control server with no logic, on Erlang/OTP's own `diameter` application:
%% the kind of stub issue 16's reference figure came from (an OTP diameter stub that only
%% answers 2001), so ocsd's CPU per CCR can be compared with it under the same client.
%%
%% OTP answers CER (capabilities exchange), DWR and DPR itself; this module answers every
%% CCR (Auth-Application-Id 4) with a CCA: Session-Id copied, Result-Code 2001, Origin-Host
%% stub.localdomain, Origin-Realm localdomain, Auth-Application-Id 4, CC-Request-Type and
%% CC-Request-Number copied. Any peer Origin-Host is accepted. No state, no logic.
%%
%% OTP ships no compiled credit-control dictionary: the minimal one below (the RFC 4006 AVPs
%% that bench/diameter_load.py sends, typed, anything else as *[AVP]) is compiled at start
%% with diameter_make:codec and loaded, as an OTP user would generate it with diameterc.
%% Messages are decoded to maps (decode_format map), so no generated .hrl is needed.
%%
%% Bench-only dependency (not needed by `make test`):
%%     apt-get install -y erlang-base erlang-diameter      # Debian bookworm: OTP 25.2.3
%% Run (stops by itself after `seconds`, default 600):
%%     escript bench/diameter_stub.erl 127.0.0.1 39880 [seconds]
%%     ERL_FLAGS="+S 1" escript bench/diameter_stub.erl ...    # one scheduler
%%     .venv/bin/python bench/diameter_load.py --port 39880 --users 10000 --server-pid PID
%% escript execs the emulator in place, so PID (of the escript command) is beam.smp itself,
%% and /proc/PID/stat counts all of its scheduler and I/O threads.

-module(diameter_stub).
-mode(compile).

-export([main/1]).
%% diameter application callbacks
-export([peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

%% The one record needed from diameter.hrl (shipped in erlang-dev, which a bench need not pull
%% in), fields as in OTP 25's lib/diameter/include/diameter.hrl.
-record(diameter_packet, {header, avps, msg, bin, errors = [], transport_data}).

-define(SERVICE, diameter_stub).
-define(ORIGIN_HOST, <<"stub.localdomain">>).
-define(ORIGIN_REALM, <<"localdomain">>).

-define(DICTIONARY, "
@id 4
@name diameter_stub_dcca
@prefix dcca
@vendor 0 IETF
@inherits diameter_gen_base_rfc6733

@avp_types
   CC-Request-Number       415  Unsigned32  M
   CC-Request-Type         416  Enumerated  M
   CC-Time                 420  Unsigned32  M
   Requested-Service-Unit  437  Grouped     M
   Subscription-Id         443  Grouped     M
   Subscription-Id-Data    444  UTF8String  M
   Used-Service-Unit       446  Grouped     M
   Subscription-Id-Type    450  Enumerated  M
   Service-Context-Id      461  UTF8String  M

@messages
   CCR ::= < Diameter Header: 272, REQ, PXY >
           < Session-Id >
           { Origin-Host }
           { Origin-Realm }
           { Destination-Realm }
           { Auth-Application-Id }
           { Service-Context-Id }
           { CC-Request-Type }
           { CC-Request-Number }
           [ Destination-Host ]
           [ User-Name ]
         * [ Subscription-Id ]
           [ Requested-Service-Unit ]
         * [ Used-Service-Unit ]
         * [ AVP ]

   CCA ::= < Diameter Header: 272, PXY >
           < Session-Id >
           { Result-Code }
           { Origin-Host }
           { Origin-Realm }
           { Auth-Application-Id }
           { CC-Request-Type }
           { CC-Request-Number }
         * [ AVP ]

@grouped
   Requested-Service-Unit ::= < AVP Header: 437 >
                              [ CC-Time ]
                            * [ AVP ]
   Used-Service-Unit ::= < AVP Header: 446 >
                         [ CC-Time ]
                       * [ AVP ]
   Subscription-Id ::= < AVP Header: 443 >
                       { Subscription-Id-Type }
                       { Subscription-Id-Data }

@enum CC-Request-Type
   INITIAL_REQUEST      1
   UPDATE_REQUEST       2
   TERMINATION_REQUEST  3
   EVENT_REQUEST        4

@enum Subscription-Id-Type
   END_USER_E164    0
   END_USER_IMSI    1
   END_USER_SIP_URI 2
   END_USER_NAI     3
   END_USER_PRIVATE 4
").

main(Args) ->
    {Address, Port, Seconds} = parse_args(Args),
    port_free(Address, Port),
    load_dictionary(),
    ok = diameter:start(),
    ok = diameter:start_service(?SERVICE, service_options()),
    {ok, _Ref} = diameter:add_transport(?SERVICE, {listen, transport_options(Address, Port)}),
    io:format("diameter_stub: OTP ~s, diameter ~s, ~b schedulers, listening on ~s:~b for ~b s~n",
              [erlang:system_info(otp_release), diameter_version(),
               erlang:system_info(schedulers_online), inet:ntoa(Address), Port, Seconds]),
    timer:sleep(Seconds * 1000),
    diameter:stop_service(?SERVICE),
    diameter:stop().

parse_args([Host, Port]) ->
    parse_args([Host, Port, "600"]);
parse_args([Host, Port, Seconds]) ->
    case {inet:parse_address(Host), string:to_integer(Port), string:to_integer(Seconds)} of
        {{ok, Address}, {P, ""}, {S, ""}} when P > 0, P < 65536, S > 0 ->
            loopback(Address) orelse usage("loopback addresses only: " ++ Host),
            {Address, P, S};
        _ ->
            usage("bad arguments")
    end;
parse_args(_) ->
    usage("wrong number of arguments").

loopback({127, _, _, _}) -> true;
loopback({0, 0, 0, 0, 0, 0, 0, 1}) -> true;
loopback(_) -> false.

usage(Why) ->
    io:format(standard_error, "~s~nusage: escript bench/diameter_stub.erl ADDRESS PORT [SECONDS]~n",
              [Why]),
    halt(2).

%% diameter_tcp reports a port in use only as a crash report of its listener process and the
%% service would wait on regardless: fail at once instead.
port_free(Address, Port) ->
    case gen_tcp:listen(Port, [{ip, Address}, {reuseaddr, true}]) of
        {ok, Socket} ->
            ok = gen_tcp:close(Socket);
        {error, Reason} ->
            io:format(standard_error, "diameter_stub: cannot listen on ~s:~b: ~p~n",
                      [inet:ntoa(Address), Port, Reason]),
            halt(1)
    end.

diameter_version() ->
    {ok, Version} = application:get_key(diameter, vsn),
    Version.

%% Compile the dictionary above to a module and load it (what diameterc + erlc would do).
load_dictionary() ->
    {ok, [Forms]} = diameter_make:codec(?DICTIONARY, [return, forms]),
    {ok, Module, Beam} = compile:forms(Forms, [return_errors]),
    {module, Module} = code:load_binary(Module, "diameter_stub_dcca.erl", Beam),
    Module.

service_options() ->
    [{'Origin-Host', ?ORIGIN_HOST},
     {'Origin-Realm', ?ORIGIN_REALM},
     {'Vendor-Id', 0},
     {'Product-Name', "diameter_stub.erl"},
     {'Auth-Application-Id', [4]},
     {decode_format, map},
     {restrict_connections, false},
     {application, [{alias, dcca},
                    {dictionary, diameter_stub_dcca},
                    {module, ?MODULE}]}].

transport_options(Address, Port) ->
    [{transport_module, diameter_tcp},
     {transport_config, [{reuseaddr, true}, {ip, Address}, {port, Port}]},
     {capabilities, [{'Host-IP-Address', [Address]}]}].

%% ---------------------------------------------------------------------------
%% diameter application callbacks: a server only answers.

peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer(_Local, _Remote, _Svc, _State) -> false.
prepare_request(_Packet, _Svc, _Peer) -> discard.
prepare_retransmit(_Packet, _Svc, _Peer) -> discard.
handle_answer(_Packet, _Request, _Svc, _Peer) -> ok.
handle_error(_Reason, _Request, _Svc, _Peer) -> ok.

%% A CCR that decoded cleanly gets its 2001. One with errors (5xxx: a mandatory AVP missing or
%% unknown, a bad value...; OTP answers 3xxx itself, request_errors being answer_3xxx) gets a
%% CCA with the first of them, so a client that counts Result-Codes sees a stub that does not
%% decode what it is sent. (A CCR without CC-Request-Type or -Number gets nothing: its CCA
%% cannot be encoded, and OTP 25 drops it without a word.)
handle_request(#diameter_packet{msg = ['CCR' | Request], errors = Errors}, _Svc, _Peer) ->
    Answer = maps:with(['Session-Id', 'CC-Request-Type', 'CC-Request-Number'], Request),
    {reply, ['CCA' | Answer#{'Result-Code' => result_code(Errors),
                             'Origin-Host' => ?ORIGIN_HOST,
                             'Origin-Realm' => ?ORIGIN_REALM,
                             'Auth-Application-Id' => 4}]};
handle_request(_Packet, _Svc, _Peer) ->
    discard.

result_code([]) -> 2001;
result_code([{Code, _Avp} | _]) -> Code;
result_code([Code | _]) -> Code.
